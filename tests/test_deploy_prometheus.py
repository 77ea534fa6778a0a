"""deploy/prometheus: the configs load, the rules load, every alert's unit tests pass.

promtool comes with Debian's prometheus package; a missing promtool fails these
tests (it is never a reason to skip them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_deploy_promql import PROMETHEUS_DIR, RULE_FILES, known_names, metric_names, rules

ALERT_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package (apt-get install prometheus) "
            "or put a promtool binary on the PATH"
        )
    result = subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_scrape_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "inventory-engine"]
    (target,) = job["static_configs"][0]["targets"]
    assert target.endswith(":9464"), "the documented default --metrics-port"
    assert sorted(PROMETHEUS_DIR / f for f in config["rule_files"]) == RULE_FILES


def test_rules_are_valid() -> None:
    out = promtool("check", "rules", *(str(p) for p in RULE_FILES))
    assert out.count("SUCCESS") == len(RULE_FILES)


def test_alert_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(ALERT_TESTS.relative_to(PROMETHEUS_DIR)))
    assert "SUCCESS" in out


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {str(rule["alert"]) for rule in rules() if "alert" in rule}
    required = {
        "InventoryHighErrorRatio",
        "InventoryHighLatencyP99",
        "InventoryInvariantViolation",
        "InventoryShortage",
        "InventoryRedisUnavailable",
        "InventoryViewLagHigh",
        "InventoryExpiryBacklog",
    }
    assert required <= alerts
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"
    assert (firing | quiet) <= alerts, "tests of alerts that do not exist"


def test_rules_query_only_metrics_the_engine_exports() -> None:
    known = known_names()
    for rule in rules():
        unknown = metric_names(str(rule["expr"])) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads unknown series {unknown}"


def test_alerts_have_a_severity_and_explain_themselves() -> None:
    for rule in rules():
        if "alert" not in rule:
            continue
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        assert isinstance(labels, dict) and labels.get("severity") in ("critical", "warning"), rule["alert"]
        assert isinstance(annotations, dict) and annotations.get("summary") and annotations.get("description")
