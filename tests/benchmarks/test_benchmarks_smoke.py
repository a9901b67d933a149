"""Smoke tests: every benchmark runs in its quick mode and prints its table, so none of them can rot.

These check that each benchmark runs end to end and reports what it should, never how fast anything is:
performance is measured by the benchmarks themselves (``docs/benchmarks.md``), not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
QUICK_TIMEOUT_SECONDS = 900  # generous: a loaded 2-core machine runs the quick modes several times slower
pytestmark = pytest.mark.timeout(QUICK_TIMEOUT_SECONDS + 60)


def run_quick(script: str, *extra: str) -> str:
    """
    Run ``benchmarks/<script> --quick`` in a subprocess (no results file) and return its output.

    :param script: the benchmark file name.
    :param extra: more arguments.
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("AIRFLOW", "_AIRFLOW"))}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", "--output", "-", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_SECONDS,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} --quick exited {proc.returncode}:\n{output[-4000:]}"
    return proc.stdout


def table_rows(output: str) -> dict[str, list[str]]:
    """Return the Markdown table rows of ``output`` by their first cell (cells stripped)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("|") and not line.startswith("|:"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_import_benchmark_quick() -> None:
    output = run_quick("bench_import.py")
    rows = table_rows(output)
    assert "`import airflow.sdk` (baseline, every process)" in rows
    assert "+ `hooks`" in rows
    # The heavy-module audit is reported, whatever the figures are.
    assert rows["+ `hooks`"][-1] == "none", rows["+ `hooks`"]
    assert "## Verdicts" in output


def test_trigger_fan_in_benchmark_quick() -> None:
    output = run_quick("bench_triggers.py")
    rows = table_rows(output)
    assert rows["metric"] == ["SeedanceRequestTrigger (ours)", "naive trigger"]
    for metric in (
        "**CPU of the trigger process, s**",
        "**GETs per poll per job, excluding the final result GET**",
        "**TCP connections open at once (max, sampled every >= 1 s)**",
        "TCP connections opened in total (client connects)",
        "**event-loop lag p99, steady state (after every trigger's first poll), ms**",
        "**detection latency p95, s**",
        "emulator CPU, s",
    ):
        assert metric in rows, metric
        assert all(cell != "failed" for cell in rows[metric]), rows[metric]
    # Every job was seen to finish by both variants (a functional check, not a timing one).
    assert rows["events: other (timeout / error / none yet)"] == ["0", "0"]
    assert "Targets (ours):" in output


def test_trigger_fan_in_benchmark_quick_over_https() -> None:
    output = run_quick("bench_triggers.py", "--protocols", "https")
    assert "## N = 40 triggers, HTTPS" in output
    rows = table_rows(output)
    assert rows["metric"] == ["SeedanceRequestTrigger (ours)", "naive trigger"]
    # Both variants reached the TLS emulator through the CA the benchmark made (no poll failed on trust).
    assert rows["events: other (timeout / error / none yet)"] == ["0", "0"]
    assert rows["triggers that polled at least once"] == ["40", "40"]
    for metric in (
        "TCP connections seen by the emulator (distinct client ports)",
        "**detection latency p95, s**",
    ):
        assert all(cell not in ("failed", "n/a") for cell in rows[metric]), rows[metric]
    assert "distinct TCP connections over the whole run" in output
    assert "CPU per poll <= 0.25x naive" in output


@pytest.mark.timeout(QUICK_TIMEOUT_SECONDS + 20)
def test_worker_slot_benchmark_quick() -> None:
    output = run_quick("bench_worker_slot.py")
    rows = table_rows(output)
    assert rows["metric"] == ["deferrable=True", "deferrable=False (sync)"]
    assert rows["runs (final states)"] == ["success", "success"]
    slot = rows["**worker-slot seconds = time in `running`, s**"]
    assert all(cell != "n/a" for cell in slot), slot
    # The deferred run was seen in two running segments (before the deferral and after the resume).
    assert rows["`running` segments per run"][0] == "2", rows["`running` segments per run"]
