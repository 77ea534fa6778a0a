"""`inventory-engine bench redis` runs the real reserve script and splits its time.

Its figures are timings and are not checked here (timing thresholds do not
belong in tests). What is checked: a short run against its own redis-server
completes (it raises if any reserve or floor call fails), its ratios are the
quotients of the rates it reports, and the split of a script's time that
``INFO commandstats`` gives adds up: the commands a script makes take part of
its time, never more than all of it.
"""

from __future__ import annotations

import pytest

from engine.bench.redis_scripts import run


def test_a_short_run_reports_rates_ratios_and_the_split_inside_redis() -> None:
    result = run(count=300, rounds=1)
    assert result["rounds"] == 1 and result["commands_per_round"] == 300
    script, bare = result["script_ops_per_s"], result["bare_evalsha_ops_per_s"]
    floor = result["floor_ops_per_s"]
    assert min(script, bare, floor) > 0
    assert result["ratio"] == pytest.approx(script / bare, abs=0.002)
    assert result["floor_ratio"] == pytest.approx(floor / bare, abs=0.002)
    assert result["logic_ratio"] == pytest.approx(script / floor, abs=0.002)
    assert result["target_met"] is (result["ratio"] >= 0.7)
    for name in ("reserve", "floor"):
        total, commands = result[f"{name}_redis_us"], result[f"{name}_commands_us"]
        assert 0 < commands < total, name
    assert result["reserve_lua_us"] == pytest.approx(
        result["reserve_redis_us"] - result["reserve_commands_us"], abs=0.02
    )
