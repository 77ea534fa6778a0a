#!/usr/bin/env python3
"""Regenerate ``engine/_proto`` from ``protos/`` (``make protos``).

Runs ``grpc_tools.protoc`` and rewrites the generated imports so the modules
import as a package (``from engine._proto.inventory.v1 import ..._pb2``), never
as top-level ``inventory.v1`` modules that would need ``sys.path`` tricks.

The output is committed; ``tests/test_protos_up_to_date.py`` regenerates into a
temporary directory and fails if the committed code differs.

Usage: ``python tools/gen_protos.py [--out DIR]`` (default: engine/_proto).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "engine" / "_proto"
PACKAGE_PREFIX = "engine._proto"

# Generated imports of our own protos look like ``from inventory.v1 import x_pb2 as ...``
# (or ``import inventory.v1.x_pb2`` in some plugin versions).
_FROM_IMPORT = re.compile(r"^(\s*)from (inventory(?:\.\w+)*) import ", re.MULTILINE)
_PLAIN_IMPORT = re.compile(r"^(\s*)import (inventory(?:\.\w+)*)(\s)", re.MULTILINE)

_INIT = '"""Generated from protos/ by tools/gen_protos.py: do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _rewrite_imports(text: str) -> str:
    text = _FROM_IMPORT.sub(rf"\1from {PACKAGE_PREFIX}.\2 import ", text)
    return _PLAIN_IMPORT.sub(rf"\1import {PACKAGE_PREFIX}.\2\3", text)


def _common_protos_root() -> Path:
    from google.type import date_pb2

    root = Path(date_pb2.__file__).resolve().parent.parent.parent
    if not (root / "google" / "type" / "date.proto").is_file():
        raise SystemExit(f"googleapis-common-protos has no .proto sources under {root}")
    return root


def generate(out: Path) -> list[Path]:
    """Generate every proto into ``out`` (replacing its contents); returns the files written."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    # google/type/*.proto (Date, TimeOfDay, DayOfWeek) ship with
    # googleapis-common-protos, a runtime dependency whose generated modules
    # the engine imports; protoc needs their sources to compile ours.
    common_protos = _common_protos_root()
    protos = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--proto_path={common_protos}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        # protoc resolves the relative proto names against --proto_path.
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out.exists():
            shutil.rmtree(out)
        written: list[Path] = []
        for src in sorted(Path(tmp).rglob("*")):
            if not src.is_file() or src.suffix not in (".py", ".pyi"):
                continue
            text = src.read_text()
            if src.name.endswith("_pb2_grpc.py") and "Stub" not in text:
                continue  # a proto with messages only: nothing for gRPC to generate
            dest = out / src.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_rewrite_imports(text))
            written.append(dest)
    # Every directory down to the generated modules is a package.
    for directory in sorted({out, *(p.parent for p in written)}):
        while True:
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text(_INIT)
                written.append(init)
            if directory == out:
                break
            directory = directory.parent
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    files = generate(args.out.resolve())
    print(f"generated {len(files)} files into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
