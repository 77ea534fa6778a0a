"""Typed stub of the C allocation rule; mirrors engine.core.allocation_rules.channel_allowance."""

__all__ = ["channel_allowance"]

def channel_allowance(
    on_hand: int,
    reserved: int,
    committed: int,
    safety_stock: int,
    kind: int,
    value: int,
    channel_used: int,
) -> int: ...
