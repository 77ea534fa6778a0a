# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: binding=False
"""Python entry to the C allocation rule (allocation.pxd), for tests and callers in Python.

Ledgers written in Cython ``cimport`` ``channel_allowance_c`` directly.
"""

from libc.stdint cimport int64_t

__all__ = ["channel_allowance"]


def channel_allowance(int64_t on_hand, int64_t reserved, int64_t committed, int64_t safety_stock,
                      int kind, int64_t value, int64_t channel_used):
    """Same as engine.core.allocation_rules.channel_allowance, in C."""
    return channel_allowance_c(on_hand, reserved, committed, safety_stock, kind, value, channel_used)
