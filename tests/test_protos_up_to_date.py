"""The committed generated code (engine/_proto) matches protos/, and imports as a package."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "engine" / "_proto"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix in (".py", ".pyi")
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    gen = _load_generator()
    gen.generate(tmp_path / "out")
    fresh, committed = _tree(tmp_path / "out"), _tree(GENERATED)
    assert sorted(fresh) == sorted(committed), "run `make protos` (python tools/gen_protos.py) and commit"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, (
        f"stale generated files {stale}: run `make protos` (python tools/gen_protos.py) and commit"
    )


def test_generated_modules_import_as_a_package() -> None:
    for path in sorted(GENERATED.rglob("*.py")):
        text = path.read_text()
        # Never `from inventory.v1 import ...`: that needs engine/_proto on sys.path.
        assert "\nfrom inventory." not in text and "\nimport inventory." not in text, path
        if path.name == "__init__.py":
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        importlib.import_module(module)
    assert "inventory" not in sys.modules


def test_every_message_and_field_is_documented() -> None:
    """A missing comment in protos/ fails here rather than in review."""
    problems = []
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        previous = ""
        for number, raw in enumerate(proto.read_text().splitlines(), 1):
            line = raw.strip()
            declares = line.startswith(("message ", "service ", "enum ", "rpc ")) or (
                line.endswith(";") and "=" in line and not line.startswith(("option", "//", "syntax"))
            )
            if declares and not previous.startswith("//"):
                problems.append(f"{proto.relative_to(ROOT)}:{number}: {line}")
            if line:
                previous = line
    assert not problems, "undocumented:\n" + "\n".join(problems)
