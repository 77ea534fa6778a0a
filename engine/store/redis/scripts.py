"""The Lua scripts: read from the package, composed with ``lib.lua``, named by SHA.

Each ``scripts/<name>.lua`` opens with a header comment stating its KEYS, ARGV
and return value (a ``-- flags: ...`` line in it sets Redis script flags).
What is sent to Redis is::

    #!lua [flags=...]      the shebang: Redis 7 checks OOM and replica state
                           before the script starts, so a write refused for
                           lack of memory can never stop a script half-way
    <the header comment>
    <lib.lua's helpers>    those the script uses (directly or not), in lib order
    <the script's body>

so each loaded script is self-contained, and ``SCRIPT LOAD`` of the same text
gives the same SHA on every node.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["SCRIPT_NAMES", "Script", "load_scripts"]

SCRIPT_NAMES = (
    "reserve",
    "reserve_begin",
    "reserve_slot",
    "reserve_finish",
    "reserve_cancel",
    "commit",
    "release",
    "fulfill",
    "unfulfill",
    "extend",
    "get",
    "supply",
    "rows",
    "expire",
    "audit",
    "shard_rows",
    "upsert_node",
    "upsert_channel",
    "lease",
    "meta",
    "reservation_exists",
    "inbound_upsert",
    "inbound_remove",
    "inbound_read",
    "inbound_list",
    "carriers_set",
    "capacity_count",
)

_FLAGS = re.compile(r"^-- flags: ([a-z, -]+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    text: str
    sha: str


def _read(name: str) -> str:
    return resources.files("engine.store.redis").joinpath(f"scripts/{name}.lua").read_text("utf-8")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFINES = re.compile(r"local\s+(?:function\s+([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_, ]*?)\s*=)")


def _definitions(lib: str) -> list[tuple[frozenset[str], str]]:
    """lib.lua cut into its top-level ``local`` definitions, each with the
    comment lines just above it, and the names each defines."""
    chunks: list[list[str]] = []
    comments: list[str] = []
    for line in lib.splitlines(keepends=True):
        if line.startswith("local "):
            chunks.append([*comments, line])
            comments = []
        elif line.startswith("--"):
            comments.append(line)  # a comment at the margin introduces the next definition
        elif chunks:
            chunks[-1] += [*comments, line]
            comments = []
        else:
            comments = []  # the file's own header: not part of any script
    out = []
    for chunk in chunks:
        text = "".join(chunk)
        match = _DEFINES.match(next(line for line in chunk if line.startswith("local ")))
        if match is None:
            raise ValueError(f"lib.lua: cannot tell what this defines: {chunk[0]!r}")
        names = match.group(1) or match.group(2)
        out.append((frozenset(n.strip() for n in names.split(",")), text))
    return out


def _needed(definitions: list[tuple[frozenset[str], str]], body: str) -> str:
    """The definitions ``body`` uses, directly or through other definitions, in
    lib order: each script carries only the helpers it calls, because Redis
    runs the whole chunk, closures and all, on every call."""
    wanted = set(_NAME.findall(body))
    keep: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, (names, text) in enumerate(definitions):
            if i not in keep and names & wanted:
                keep.add(i)
                wanted |= set(_NAME.findall(text))
                changed = True
    return "".join(text for i, (_, text) in enumerate(definitions) if i in keep)


def _compose(name: str, source: str, lib: str) -> str:
    lines = source.splitlines(keepends=True)
    header_end = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    header, body = "".join(lines[:header_end]), "".join(lines[header_end:])
    if not header:
        raise ValueError(f"script {name}.lua must open with a header comment (KEYS, ARGV, returns)")
    flags = _FLAGS.search(header)
    shebang = f"#!lua flags={flags.group(1).replace(' ', '')}" if flags else "#!lua"
    return f"{shebang}\n{header}{_needed(_definitions(lib), body)}\n{body}"


def load_scripts() -> dict[str, Script]:
    """Every script, composed and hashed (no Redis involved)."""
    lib = _read("lib")
    scripts: dict[str, Script] = {}
    for name in SCRIPT_NAMES:
        text = _compose(name, _read(name), lib)
        scripts[name] = Script(name, text, hashlib.sha1(text.encode()).hexdigest())
    return scripts
