"""``make loadtest-smoke``: a short, bounded load test that CI runs after the unit tests.

    python -m loadtests.smoke [--out build/loadtest] [--run-time 15] [--memory]

For each scenario (flash sale, then omnichannel day), against an engine of its
own so that each run's counters are all its own:

1. start ``inventory-engine serve --demo`` on a free loopback port, with a
   fresh data directory (journal and fsync on, as in production; ``--memory``
   for none) and no metrics port;
2. run Locust headless for ``--run-time`` seconds, writing CSV and HTML
   reports and the outcome journals under ``--out/<scenario>/``;
3. ``inventory-engine audit --target ...`` (the store against its invariants);
4. ``python -m loadtests.check`` (the store against what clients were told);
5. stop the engine (SIGTERM, drained).

It prints per-request-type throughput and failures and exits non-zero if
Locust counted a failure, the audit found a violation or the check did. The
whole thing takes about 45 s on a 2-core machine (2 x 15 s of load).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import check

__all__ = ["SCENARIOS", "main"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: Path
    users: int
    spawn_rate: int
    extra: tuple[str, ...] = ()


# Sized for a 2-core machine that also runs the engine: enough users to keep
# the engine busy, and little enough flash-sale stock (3 x 30 units) that its
# 20x demand is spent within 15 s even on a busy machine.
SCENARIOS = {
    "flash_sale": Scenario(
        "flash_sale",
        ROOT / "loadtests/scenarios/flash_sale.py",
        users=30,
        spawn_rate=30,
        extra=("--hot-skus", "3", "--hot-stock", "30"),
    ),
    # Sessions at twice the everyday pace: more whole sessions in a short run.
    "omnichannel": Scenario(
        "omnichannel",
        ROOT / "loadtests/scenarios/omnichannel.py",
        users=60,
        spawn_rate=60,
        extra=("--think-scale", "0.5"),
    ),
    "soak": Scenario("soak", ROOT / "loadtests/scenarios/soak.py", users=40, spawn_rate=20),
}

_PORT = re.compile(r"serving on \S+ \(port (\d+)\)")


@contextlib.contextmanager
def engine(
    workdir: Path, *, memory: bool, engine_root: Path = ROOT, start_timeout_s: float = 60.0
) -> Iterator[str]:
    """A demo engine on a free loopback port; yields its address, stops it (SIGTERM) after."""
    log_path = workdir / "engine.log"
    command = [sys.executable, "-m", "engine.cli", "--log-format", "json", "serve", "--demo"]
    command += ["--listen", "127.0.0.1:0", "--metrics-port", "0", "--grace", "2"]
    command += ["--memory"] if memory else ["--data-dir", str(workdir / "data")]
    with log_path.open("w") as log_file:
        # `python -m` imports `engine` from its working directory first.
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=engine_root)
        try:
            # Port 0 lets the kernel pick a free port; the engine logs which.
            deadline = time.monotonic() + start_timeout_s
            port = None
            while port is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"the engine exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the engine did not start in {start_timeout_s:.0f} s; see {log_path}")
                match = _PORT.search(log_path.read_text())
                if match:
                    port = int(match.group(1))
                else:
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _percentile(response_times: dict[str, int], fraction: float) -> float | None:
    """A percentile of Locust's response-time histogram ({rounded ms: count})."""
    total = sum(response_times.values())
    if not total:
        return None
    seen = 0
    for ms, count in sorted((float(k), v) for k, v in response_times.items()):
        seen += count
        if seen >= fraction * total:
            return ms
    return None


def _stats(json_path: Path) -> list[dict[str, Any]]:
    """Per request type: count, failures, throughput and latency, from Locust's final JSON.

    (The final JSON, not the CSV: Locust writes the CSV on a timer, and its
    last write can miss the run's last second.)
    """
    if not json_path.exists():
        return []
    entries = sorted(json.loads(json_path.read_text()), key=lambda e: (e["method"], e["name"]))
    if not entries:
        return []
    total: dict[str, Any] = {
        "method": "",
        "name": "Total",
        "num_requests": sum(e["num_requests"] for e in entries),
        "num_failures": sum(e["num_failures"] for e in entries),
        "start_time": min(e["start_time"] for e in entries),
        "last_request_timestamp": max(e["last_request_timestamp"] or 0 for e in entries),
        "response_times": {},
    }
    for e in entries:
        for ms, count in e["response_times"].items():
            total["response_times"][ms] = total["response_times"].get(ms, 0) + count
    # Every rate over the run's whole span, as Locust's own summary does (a
    # type called once would otherwise show an absurd rate).
    span = max(1e-9, total["last_request_timestamp"] - total["start_time"])
    rows = []
    for entry in [*entries, total]:
        rows.append(
            {
                "type": entry["method"],
                "name": entry["name"],
                "requests": entry["num_requests"],
                "failures": entry["num_failures"],
                "rps": round(entry["num_requests"] / span, 1),
                "p50_ms": _percentile(entry["response_times"], 0.50),
                "p99_ms": _percentile(entry["response_times"], 0.99),
            }
        )
    return rows


def run_scenario(
    scenario: Scenario, out: Path, *, run_time_s: int, memory: bool, engine_root: Path = ROOT
) -> dict[str, Any]:
    workdir = out / scenario.name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    journal_dir = workdir / "journal"
    result: dict[str, Any] = {"scenario": scenario.name, "dir": str(workdir)}
    started = time.monotonic()
    with engine(workdir, memory=memory, engine_root=engine_root) as target:
        result["engine_ready_s"] = round(time.monotonic() - started, 1)
        locust = [sys.executable, "-m", "locust", "-f", str(scenario.locustfile), "--headless"]
        locust += ["-u", str(scenario.users), "-r", str(scenario.spawn_rate), "-t", f"{run_time_s}s"]
        locust += ["--host", target, "--only-summary", "--loglevel", "WARNING"]
        locust += ["--csv", str(workdir / scenario.name), "--html", str(workdir / "report.html")]
        locust += ["--json-file", str(workdir / "stats")]
        locust += ["--journal-dir", str(journal_dir), *scenario.extra]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        print(f"== {scenario.name}: {' '.join(locust[2:])}", flush=True)
        with (workdir / "locust.log").open("w") as log_file:
            locust_rc = subprocess.run(
                locust, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=run_time_s + 60
            ).returncode
        result["locust_exit"] = locust_rc
        audit = subprocess.run(
            [sys.executable, "-m", "engine.cli", "audit", "--target", target, "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        result["audit_exit"] = audit.returncode
        with contextlib.suppress(json.JSONDecodeError):
            audit_report = json.loads(audit.stdout)
            result["audit"] = {
                k: audit_report.get(k) for k in ("ok", "violations", "row_count", "reservation_count")
            }
            result["audit"]["shortages"] = len(audit_report.get("shortages", []))
        if audit.returncode not in (0, 1):
            result["audit_error"] = (audit.stderr or audit.stdout).strip()
        report_path = workdir / "check.json"
        check_args = ["--target", target, "--journal-dir", str(journal_dir), "--report", str(report_path)]
        if isinstance(result.get("audit", {}).get("reservation_count"), int):
            check_args += ["--engine-reservations", str(result["audit"]["reservation_count"])]
        result["check_exit"] = check.main(check_args)
    result["stats"] = _stats(workdir / "stats.json")
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["ok"] = result["locust_exit"] == 0 and result["audit_exit"] == 0 and result["check_exit"] == 0
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _print(result: dict[str, Any]) -> None:
    print(f"-- {result['scenario']}: {'OK' if result['ok'] else 'FAILED'} in {result['wall_s']} s")
    print(f"   {'request':<44} {'count':>7} {'fails':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for row in result["stats"]:
        print(
            f"   {row['name'][:44]:<44} {row['requests']:>7} {row['failures']:>6} {row['rps']:>8}"
            f" {_ms(row['p50_ms']):>7} {_ms(row['p99_ms']):>7}"
        )
    audit = result.get("audit", {})
    print(
        f"   locust exit {result['locust_exit']}; audit exit {result['audit_exit']}"
        f" (rows {audit.get('row_count')}, reservations {audit.get('reservation_count')},"
        f" shortages {audit.get('shortages')}); run check exit {result['check_exit']}"
    )
    if result["locust_exit"]:
        print(f"   Locust's log: {result['dir']}/locust.log")
    for violation in audit.get("violations") or ():
        print(f"   audit violation: {violation}")
    if result.get("audit_error"):
        print(f"   audit: {result['audit_error']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build/loadtest", help="reports and journals")
    parser.add_argument("--run-time", type=int, default=15, help="seconds of load per scenario")
    parser.add_argument("--memory", action="store_true", help="engines without a data directory")
    parser.add_argument(
        "--engine-root",
        type=Path,
        default=ROOT,
        help="run the engine from this source tree (built in place), e.g. to compare two versions",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default flash_sale and omnichannel)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = []
    for name in args.scenario or ["flash_sale", "omnichannel"]:
        result = run_scenario(
            SCENARIOS[name],
            args.out,
            run_time_s=args.run_time,
            memory=args.memory,
            engine_root=args.engine_root,
        )
        _print(result)
        results.append(result)
    ok = all(r["ok"] for r in results)
    total = round(time.monotonic() - started, 1)
    (args.out / "summary.json").write_text(
        json.dumps({"ok": ok, "wall_s": total, "scenarios": results}, indent=2) + "\n"
    )
    print(f"loadtest smoke: {'OK' if ok else 'FAILED'} in {total} s; reports in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
