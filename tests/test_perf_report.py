"""docs/PERFORMANCE.md renders from its recorded figures, and says what it must.

The report generator's benchmarks take minutes, so they are not run here; its
rendering is. The committed raw figures (docs/perf/results.json) are rendered
again into a temporary directory: every section, every plot and every target
from the issues must be there, a failed part must say it failed, and the
Locust section must say it is pending when there are no Locust figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.bench.report import PARTS, TARGETS, render

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "docs" / "perf" / "results.json"


def _recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def test_the_committed_figures_cover_every_part() -> None:
    data = _recorded()
    assert set(data["results"]) == set(PARTS)
    assert not data["meta"]["quick"], "the committed report must come from a full run"
    assert data["results"]["rowlock"]["zero_oversell"] is True
    assert data["results"]["flash_sale"]["oversold"] == 0


def test_the_report_renders_with_tables_plots_and_targets(tmp_path: Path) -> None:
    data = _recorded()
    out = tmp_path / "PERFORMANCE.md"
    render(data["results"], data["meta"], out)
    text = out.read_text()
    for heading in (
        "## Machine",
        "## Targets from the issues",
        "## Reserve vs the no-op RPC",
        "## Scaling: worker processes and Cluster shards",
        "## Hot SKU: flash sale",
        "## The ledger: pure vs Cython, and memory per (SKU, node) row",
        "## Against the usual approach: PostgreSQL row locks",
        "## Load-test scenarios (Locust)",
        "## How to regenerate",
    ):
        assert heading in text
    assert "compare the ratios" in text
    assert "10,000,000" in text  # memory per row at 10M rows
    for png in ("grpc.png", "scaling.png", "flash_sale.png", "memory.png", "rowlock.png"):
        assert f"](perf/{png})" in text
        assert (tmp_path / "perf" / png).read_bytes().startswith(b"\x89PNG")
    assert len(TARGETS) == 5
    targets = text.split("## Targets from the issues")[1].split("\n## ")[0]
    for name in ("`bench core`", "bytes per row", "embedded", "redis", "`bench flash-sale`"):
        assert name in targets


def test_a_failed_part_and_missing_locust_figures_are_said(tmp_path: Path) -> None:
    data = _recorded()
    results = dict(data["results"])
    results["scaling"] = {"error": "RuntimeError: the cluster did not start"}
    results["locust"] = {"status": "pending", "reason": "loadtests/ does not exist yet"}
    out = tmp_path / "PERFORMANCE.md"
    render(results, data["meta"], out)
    text = out.read_text()
    assert "**This part failed:** `RuntimeError: the cluster did not start`" in text
    assert "**Pending**: loadtests/ does not exist yet" in text
    assert not (tmp_path / "perf" / "scaling.png").exists()
