"""The one place that chooses a ledger implementation.

``fast`` (the Cython ledger, the default) or ``pure`` (the Python reference).
The fast one is required when asked for: a missing extension is an error, never
a silent fallback to the slow one.
"""

from __future__ import annotations

from engine.core.ledger import PureLedger
from engine.core.ledger_protocol import Ledger

__all__ = ["IMPLEMENTATIONS", "make_ledger"]

IMPLEMENTATIONS = ("fast", "pure")


def make_ledger(impl: str = "fast") -> Ledger:
    if impl == "pure":
        return PureLedger()
    if impl == "fast":
        try:
            from engine._fast.ledger import FastLedger
        except ImportError as exc:  # pragma: no cover - exercised by a test with a broken path
            raise RuntimeError(
                "the Cython ledger (engine._fast.ledger) is not built; "
                "reinstall with `pip install -e .` or set ENGINE_IMPL=pure explicitly"
            ) from exc
        return FastLedger()
    raise ValueError(f"unknown ledger implementation {impl!r}; choose one of {IMPLEMENTATIONS}")
