"""The fleet benches run end to end with tiny sizes, so they cannot rot between the runs that
produce docs/performance.md. Nothing here asserts a timing or a memory figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.mark.timeout(120)
def test_fleet_bench_holds_a_small_fleet_over_several_client_processes(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = run_bench(
        "fleet_bench.py",
        *("--sessions", "12", "--servers", "ours", "--idle", "0.3", "--probes", "3"),
        *("--per-client", "5", "--json", str(out)),  # three client processes
    )
    (row,) = json.loads(out.read_text())
    assert (row["server"], row["held"], row["errors"], row["probe_errors"]) == ("ours", 12, 0, 0)
    assert row["stopped_because"] == "" and row["probe_p50_ms"] is not None
    assert "target <= 40 KB per idle session" in done.stdout


@pytest.mark.timeout(120)
def test_registry_growth_bench_runs_every_operation(tmp_path: Path) -> None:
    out = tmp_path / "growth.json"
    done = run_bench(
        "registry_growth_bench.py",
        *("--sizes", "50,200", "--repeat", "5", "--other-accounts", "2", "--json", str(out)),
    )
    rows = json.loads(out.read_text())
    assert [r["owner_devices"] for r in rows] == [50, 200]
    assert all(r[k]["p50_ms"] >= 0 for r in rows for k in ("lookup", "redeem", "revoke"))
    assert "redeem: p50 at 220 / at 70" in done.stdout


@pytest.mark.timeout(150)
def test_storm_bench_restarts_the_server_under_enrolled_agents(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    done = run_bench(
        "storm_bench.py",
        *("--devices", "6", "--agents-per-process", "3", "--downtime", "0.5"),
        *("--timeout", "60", "--servers", "ours", "--json", str(out)),
        timeout=140,
    )
    (result,) = json.loads(out.read_text())
    assert (result["devices"], result["back_online"], result["early"]) == (6, 6, 0)
    assert result["failed_once_up"] == 0
    assert "ratio recovery after restart / cold start" in done.stdout
