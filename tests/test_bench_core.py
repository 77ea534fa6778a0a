"""`bench core` on a small catalogue: both ledgers agree on the program, and the
per-operation breakdown covers every operation kind it ran (figures are not
checked: timings belong in benchmarks, not tests)."""

from __future__ import annotations

from engine.bench.core import run, run_per_op


def test_the_op_mix_runs_identically_on_both_ledgers() -> None:
    result = run(rows=2_000, ops=3_000)
    assert result["rows"] == 2_000 and result["ops"] == 3_000
    assert result["pure_ops_per_s"] > 0 and result["fast_ops_per_s"] > 0
    # run() raises if the two ledgers end in different states.
    assert result["bytes_per_row"] > 0 and result["pure_bytes_per_row"] > 0


def test_the_per_operation_breakdown_covers_every_kind_it_ran() -> None:
    result = run_per_op(rows=2_000, ops=3_000)
    kinds = ("reserve", "commit", "release", "fulfill", "extend", "expire_due")
    assert set(kinds) <= set(result)
    assert sum(result[k]["calls"] for k in kinds) == result["ops"] == 3_000
    assert abs(sum(result[k]["share_of_fast_time"] for k in kinds) - 1.0) < 0.01
    assert all(result[k]["fast_ns"] > 0 and result[k]["pure_ns"] > 0 for k in kinds)
