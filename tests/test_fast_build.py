"""The Cython ledger is built, compiled, and is what ``make_ledger("fast")`` returns."""

from __future__ import annotations

import importlib.machinery

from engine._fast import ledger as fast_module
from engine._fast.ledger import FastLedger
from engine.core.ledger_protocol import Ledger
from engine.ledgers import make_ledger


def test_make_ledger_fast_returns_the_cython_class():
    ledger = make_ledger("fast")
    assert type(ledger) is FastLedger
    assert ledger.implementation == "fast"
    assert make_ledger("pure").implementation == "pure"


def test_the_fast_ledger_is_a_compiled_extension_not_python_source():
    path = fast_module.__file__
    assert path is not None
    assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), path
    assert isinstance(fast_module.__loader__, importlib.machinery.ExtensionFileLoader)
    # A cdef class: no instance __dict__, methods implemented in C.
    assert not hasattr(FastLedger(), "__dict__")
    assert type(FastLedger.reserve).__name__ in ("method_descriptor", "cython_function_or_method")


def test_the_fast_ledger_has_every_method_of_the_protocol():
    protocol_methods = {
        name for name, value in vars(Ledger).items() if callable(value) and not name.startswith("_")
    }
    missing = {name for name in protocol_methods if not callable(getattr(FastLedger, name, None))}
    assert not missing


def test_a_fresh_fast_ledger_round_trips_through_its_image():
    ledger = make_ledger("fast")
    ledger.define_node("dc1")
    ledger.define_channel("web", ["dc1"])
    ledger.adjust_stock("sku", "dc1", 5, None, 0.0)
    assert ledger.reserve("r", "web", [("sku", 2, None)], 60.0, False, 0.0) == 1
    image = ledger.export_state()
    other = make_ledger("fast")
    other.load_state(image)
    assert other.export_state() == image
    assert other.stock("sku", "dc1").reserved == 2
