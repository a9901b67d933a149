#!/usr/bin/env python3
"""Benchmark: worker-slot seconds per generation, deferrable vs sync, through a real Airflow.

The same generation (a job of ``--job-seconds`` in the emulator) runs as two DAGs that differ only in
``deferrable``: ``True`` (submit, defer to ``SeedanceRequestTrigger``, resume in ``execute_complete``) and
``False`` (submit, then poll in the worker). Both poll every ``--poll`` seconds.

**What is measured.** A worker slot is held while the task instance is ``running``: from the Execution API's
``/run`` call (queued -> running) to the state update that ends the try or defers it (running -> deferred /
success). Airflow keeps ``start_date`` across a deferral (the resumed try does not reset it), so
``start_date``/``end_date``/``duration`` cannot tell the two apart, and ``task_instance_history`` only holds
finished tries. So a sampler thread reads the task instance's ``state`` from the metadata DB (SQLite,
read-only) every 50 ms while the run goes on and integrates the time spent in each state; the figure is
the time in ``running`` (summed over the segments before the deferral and after the resume). As a
cross-check, the in-process time is also read from the task's own log (Airflow 3's JSON lines): first
record to the ``Pausing task as DEFERRED`` record, plus first record after the resume to the last one.

Full mode runs :class:`~airflow_provider_seedance.testing.local_airflow.LocalAirflow` (api-server, scheduler
with the LocalExecutor, dag-processor, triggerer as separate processes), ``--runs`` runs per mode,
alternating. ``--quick`` (the smoke test's mode) runs each DAG once with ``dag.test()`` in one subprocess
with a fresh SQLite DB (the trigger runs inline there), with the same DB sampling, and a 2 s job.

    python benchmarks/bench_worker_slot.py                 # 20 s jobs, 3 runs per mode (~4 min)
    python benchmarks/bench_worker_slot.py --runs 1 --job-seconds 10 --output -
    python benchmarks/bench_worker_slot.py --quick         # dag.test(), one 2 s job per mode, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    finish_notes,
    fmt,
    machine_notes,
    median,
    notes_block,
    side_by_side,
    verdict,
    worker_env,
    write_result,
)

TOKEN = "bench-token-not-a-secret-0123456789"
TASK_ID = "generate"
MODES = {"deferred": "bench_slot_deferred", "sync": "bench_slot_sync"}
LABELS = {"deferred": "deferrable=True", "sync": "deferrable=False (sync)"}
SAMPLE_SECONDS = 0.05
TARGET_SECONDS = 2.0
RUN_TIMEOUT_SECONDS = 600.0
DEFERRED_MARKER = "Pausing task as DEFERRED"

DAG_TEMPLATE = '''
"""Worker-slot benchmark DAGs: one generation, deferrable or not."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator

for dag_id, deferrable in (("{deferred}", True), ("{sync}", False)):
    with DAG(dag_id, schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
        SeedanceImageToVideoOperator(
            task_id="{task_id}",
            prompt="A paper boat on a rainy street",
            first_frame_image_url="https://example.com/first-frame.png",
            deferrable=deferrable,
            poll_interval={poll},
            timeout=600,
            retries=0,
        )
    globals()[dag_id] = dag
'''


def dag_source(poll: float) -> str:
    """
    Return the DAG file defining both benchmark DAGs.

    :param poll: the poll interval, seconds.
    """
    return DAG_TEMPLATE.format(deferred=MODES["deferred"], sync=MODES["sync"], task_id=TASK_ID, poll=poll)


# ---------------------------------------------------------------------------------------------------------
# The measurement: sample the task instance's state from the metadata DB
# ---------------------------------------------------------------------------------------------------------


class StateSampler(threading.Thread):
    """
    Read one task instance's state every 50 ms from a SQLite metadata DB, read-only.

    :param db_path: the SQLite file.
    :param dag_id: the DAG.
    :param run_id: the run (``None``: the DAG's only run, as with ``dag.test()``).
    """

    def __init__(self, db_path: Path, dag_id: str, run_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.db_path = db_path
        self.dag_id = dag_id
        self.run_id = run_id
        self.samples: list[tuple[float, str | None]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        sql = "SELECT state FROM task_instance WHERE dag_id = ? AND task_id = ?"
        params: tuple[str, ...] = (self.dag_id, TASK_ID)
        if self.run_id is not None:
            sql += " AND run_id = ?"
            params += (self.run_id,)
        db: sqlite3.Connection | None = None
        while not self._halt.is_set():
            try:
                if db is None:
                    db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
                row = db.execute(sql, params).fetchone()
            except sqlite3.Error:  # the DB may not exist yet, or be locked for a moment
                row = None
            self.samples.append((time.monotonic(), row[0] if row else None))
            self._halt.wait(SAMPLE_SECONDS)
        if db is not None:
            db.close()

    def stop(self) -> StateTimes:
        """Stop sampling and return the time spent in each state."""
        self._halt.set()
        self.join(10)
        return StateTimes.from_samples(self.samples)


@dataclass
class StateTimes:
    """
    Time spent in each task-instance state, from samples.

    :param seconds: state -> seconds.
    :param running_segments: how many separate times the task was ``running``.
    :param sequence: the states in the order seen (consecutive duplicates merged).
    """

    seconds: dict[str, float] = field(default_factory=dict)
    running_segments: int = 0
    sequence: list[str] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: list[tuple[float, str | None]]) -> StateTimes:
        """
        Integrate samples: each interval is credited to the state seen at its start.

        :param samples: (monotonic time, state) pairs, in order.
        """
        times = cls()
        for (at, state), (after, _) in itertools.pairwise(samples):
            name = state or "none"
            times.seconds[name] = times.seconds.get(name, 0.0) + (after - at)
            if not times.sequence or times.sequence[-1] != name:
                times.sequence.append(name)
                if name == "running":
                    times.running_segments += 1
        return times

    def get(self, state: str) -> float:
        """
        Seconds spent in ``state``.

        :param state: a task-instance state.
        """
        return self.seconds.get(state, 0.0)


def _timestamp(record: dict[str, Any]) -> float | None:
    value = record.get("timestamp")
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def log_running_seconds(records: list[dict[str, Any]]) -> float | None:
    """
    Cross-check from the worker's task log: the span of the records each worker process wrote.

    A deferred try's log holds two processes' records: up to ``Pausing task as DEFERRED`` (and a few lines
    after it), then, after the deferral, the resumed process's. They are split at the largest gap between
    two records after the deferral marker; a sync try's log is one span.

    :param records: the worker log's records (trigger logs excluded).
    """
    stamped = sorted((ts, str(r.get("event", ""))) for r in records if (ts := _timestamp(r)) is not None)
    if not stamped:
        return None
    times = [ts for ts, _ in stamped]
    marker = next((i for i, (_, event) in enumerate(stamped) if DEFERRED_MARKER in event), None)
    if marker is None or marker == len(times) - 1:
        return times[-1] - times[0]
    gap = max(range(marker, len(times) - 1), key=lambda i: times[i + 1] - times[i])
    return (times[gap] - times[0]) + (times[-1] - times[gap + 1])


@dataclass
class RunFigures:
    """What one run of one mode measured."""

    mode: str
    state: str
    times: StateTimes
    wall: float
    log_running: float | None = None
    ti_duration: float | None = None


# ---------------------------------------------------------------------------------------------------------
# Full mode: LocalAirflow
# ---------------------------------------------------------------------------------------------------------


def run_local(job_seconds: float, poll: float, runs: int, tmp: Path) -> tuple[list[RunFigures], float]:
    """
    Run each DAG ``runs`` times through a real Airflow; return the figures and the startup seconds.

    :param job_seconds: the generation length in the emulator.
    :param poll: the operators' poll interval.
    :param runs: runs per mode.
    :param tmp: a scratch directory.
    """
    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
    from airflow_provider_seedance.testing.local_airflow import LocalAirflow

    dags = tmp / "dags"
    dags.mkdir()
    (dags / "bench_worker_slot_dags.py").write_text(dag_source(poll))
    queue = min(2.0, job_seconds / 4)
    plan = JobPlan(queue_seconds=queue, run_seconds=job_seconds - queue)
    figures: list[RunFigures] = []
    with SeedanceEmulator(token=TOKEN, plan=plan) as emulator:
        started = time.monotonic()
        airflow = LocalAirflow(dags, env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": emulator.connection_json()})
        with airflow:
            airflow.wait_ready()
            airflow.wait_for_dags(*MODES.values())
            for dag_id in MODES.values():
                airflow.unpause(dag_id)
            startup = time.monotonic() - started
            print(f"Airflow ready after {startup:.0f} s", flush=True)
            for index in range(runs):
                for mode, dag_id in MODES.items():
                    run_id = airflow.trigger(dag_id, run_id=f"bench_{mode}_{index}")
                    sampler = StateSampler(airflow.db_path, dag_id, run_id)
                    began = time.monotonic()
                    sampler.start()
                    state = airflow.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_SECONDS)
                    wall = time.monotonic() - began
                    # One more sample after the end, so the last state's interval is closed.
                    time.sleep(SAMPLE_SECONDS * 2)
                    times = sampler.stop()
                    ti = next(t for t in airflow.task_instances(dag_id, run_id) if t.task_id == TASK_ID)
                    worker_records: list[dict[str, Any]] = []
                    for path in ti.log_files:
                        if ".trigger." not in path.name:
                            from airflow_provider_seedance.testing.local_airflow import read_log_records

                            worker_records.extend(read_log_records(path))
                    figures.append(
                        RunFigures(mode, state, times, wall, log_running_seconds(worker_records), ti.duration)
                    )
                    print(
                        f"  run {index + 1} {mode:8}: {state}, running {times.get('running'):.2f} s "
                        f"in {times.running_segments} segment(s), states {times.sequence}",
                        flush=True,
                    )
    return figures, startup


# ---------------------------------------------------------------------------------------------------------
# Quick mode: dag.test() in a subprocess
# ---------------------------------------------------------------------------------------------------------


def dag_test_worker(job_seconds: float, poll: float, out: Path) -> None:
    """
    In a fresh process with its own SQLite DB: run each DAG once with ``dag.test()``, sampling the DB.

    :param job_seconds: the generation length.
    :param poll: the poll interval.
    :param out: the JSON file to write.
    """
    import importlib.util
    import os

    from airflow.utils import db as airflow_db

    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

    airflow_db.initdb()
    dags_dir = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    spec = importlib.util.spec_from_file_location(
        "bench_worker_slot_dags", dags_dir / "bench_worker_slot_dags.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    db_path = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    queue = min(2.0, job_seconds / 4)
    results = []
    with SeedanceEmulator(
        token=TOKEN, plan=JobPlan(queue_seconds=queue, run_seconds=job_seconds - queue)
    ) as emu:
        os.environ["AIRFLOW_CONN_SEEDANCE_DEFAULT"] = emu.connection_json()
        for mode, dag_id in MODES.items():
            dag = getattr(module, dag_id)
            _serialize(dag)
            sampler = StateSampler(db_path, dag_id)
            began = time.monotonic()
            sampler.start()
            dag_run = dag.test()
            wall = time.monotonic() - began
            time.sleep(SAMPLE_SECONDS * 2)
            times = sampler.stop()
            results.append(
                {
                    "mode": mode,
                    "state": str(getattr(dag_run.state, "value", dag_run.state)),
                    "seconds": times.seconds,
                    "segments": times.running_segments,
                    "sequence": times.sequence,
                    "wall": wall,
                }
            )
    out.write_text(json.dumps(results))


def _serialize(dag: Any) -> None:
    """Store ``dag`` in the metadata DB, as the dag-processor would (dag.test() needs a serialized DAG)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def run_dag_test(job_seconds: float, poll: float, tmp: Path) -> list[RunFigures]:
    """
    Run the quick mode's subprocess; return its figures.

    :param job_seconds: the generation length.
    :param poll: the poll interval.
    :param tmp: a scratch directory.
    """
    home = tmp / "airflow-home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / "bench_worker_slot_dags.py").write_text(dag_source(poll))
    out = tmp / "dag-test.json"
    env = worker_env(
        home,
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        },
    )
    proc = subprocess.run(
        [
            PYTHON,
            __file__,
            "--dag-test-worker",
            "--job-seconds",
            str(job_seconds),
            "--poll",
            str(poll),
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(
            f"the dag.test() worker failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    return [
        RunFigures(
            r["mode"],
            r["state"],
            StateTimes(seconds=r["seconds"], running_segments=r["segments"], sequence=r["sequence"]),
            r["wall"],
        )
        for r in json.loads(out.read_text())
    ]


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def render(
    figures: list[RunFigures],
    job_seconds: float,
    poll: float,
    quick: bool,
    startup: float | None,
    notes: dict[str, str],
) -> str:
    """
    Build the Markdown report.

    :param figures: every run's figures.
    :param job_seconds: the generation length.
    :param poll: the poll interval.
    :param quick: whether this was the ``dag.test()`` mode.
    :param startup: seconds until the LocalAirflow was ready (full mode).
    :param notes: the environment notes taken at the start.
    """
    by_mode = {mode: [f for f in figures if f.mode == mode] for mode in MODES}

    def cell(mode: str, value: Any, digits: int = 2) -> str:
        values = [v for v in (value(f) for f in by_mode[mode]) if v is not None]
        if not values:
            return "n/a"
        if len(values) == 1:
            return fmt(values[0], digits)
        return (
            f"{fmt(median(values), digits)} (min {fmt(min(values), digits)}, max {fmt(max(values), digits)})"
        )

    rows = [
        ("runs (final states)", [", ".join(f.state for f in by_mode[m]) for m in MODES]),
        (
            "**worker-slot seconds = time in `running`, s**",
            [cell(m, lambda f: f.times.get("running")) for m in MODES],
        ),
        ("`running` segments per run", [cell(m, lambda f: f.times.running_segments, 0) for m in MODES]),
        ("time in `deferred`, s", [cell(m, lambda f: f.times.get("deferred")) for m in MODES]),
        ("time in `queued`, s", [cell(m, lambda f: f.times.get("queued")) for m in MODES]),
        ("time in `scheduled`, s", [cell(m, lambda f: f.times.get("scheduled")) for m in MODES]),
    ]
    if not quick:
        rows += [
            (
                "cross-check: worker log first -> last record per process, s",
                [cell(m, lambda f: f.log_running) for m in MODES],
            ),
            (
                "task instance `duration` (start_date -> end_date, includes deferral), s",
                [cell(m, lambda f: f.ti_duration) for m in MODES],
            ),
        ]
    rows.append(("run wall time (trigger -> run finished), s", [cell(m, lambda f: f.wall) for m in MODES]))
    deferred = [f.times.get("running") for f in by_mode["deferred"]]
    sync = [f.times.get("running") for f in by_mode["sync"]]
    worst = max(deferred) if deferred else None
    all_ok = all(f.state == "success" for f in figures)
    lines = [
        "# Worker-slot seconds per generation",
        "",
        f"`python benchmarks/bench_worker_slot.py{' --quick' if quick else ''}`: a {job_seconds:g} s "
        f"generation (emulator job), poll every {poll:g} s, "
        + (
            "each DAG run once with `dag.test()` (trigger inline, same process)"
            if quick
            else f"{len(deferred)} run(s) per mode through LocalAirflow "
            "(real scheduler, LocalExecutor, triggerer)"
        )
        + ". Median (min, max) over runs; see the module docstring for the method."
        + (
            " With `dag.test()` the inline trigger runs while the task instance is `queued`, so that row is "
            "the generation itself, not executor pick-up."
            if quick
            else " `queued` is the wait for an executor slot and the task process's start-up."
        ),
        "",
        side_by_side([LABELS[m] for m in MODES], rows),
        "",
        "## Verdict",
        "",
        f"- worker-slot seconds per deferred generation <= {TARGET_SECONDS:g} s: "
        + (
            f"median {fmt(median(deferred))} s, worst {fmt(worst)} s: "
            f"{verdict(worst is not None and worst <= TARGET_SECONDS)}"
            if deferred
            else "not measured"
        ),
        f"- sync mode holds the slot {fmt(median(sync))} s for the same {job_seconds:g} s generation"
        + (
            f" ({median(sync) / median(deferred):.0f}x the deferred figure)"
            if deferred and sync and median(deferred)
            else ""
        ),
        f"- every run succeeded: {verdict(all_ok)}",
        "",
    ]
    if startup is not None:
        lines += [f"LocalAirflow took {startup:.0f} s to start (migrate + four components).", ""]
    lines += ["## Environment", "", notes_block(finish_notes(notes)), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, internally, the ``dag.test()`` worker)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--job-seconds", type=float, default=20.0, help="generation length (default %(default)s)"
    )
    parser.add_argument(
        "--poll", type=float, default=2.0, help="operators' poll interval (default %(default)s)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per mode in full mode (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="dag.test(), one 2 s job per mode, prints only")
    parser.add_argument(
        "--output", default=None, help="results file (default benchmarks/results/worker_slot.md; '-': none)"
    )
    parser.add_argument("--dag-test-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dag_test_worker:
        dag_test_worker(args.job_seconds, args.poll, Path(args.out))
        return 0
    if args.job_seconds <= 0 or args.poll <= 0 or args.runs < 1:
        parser.error("--job-seconds and --poll must be positive, --runs at least 1")
    notes = machine_notes()
    with tempfile.TemporaryDirectory(prefix="seedance-bench-slot-") as tmp:
        if args.quick:
            args.job_seconds = 2.0 if args.job_seconds == 20.0 else args.job_seconds
            args.poll = 0.5 if args.poll == 2.0 else args.poll
            args.output = args.output or "-"
            figures = run_dag_test(args.job_seconds, args.poll, Path(tmp))
            startup = None
        else:
            figures, startup = run_local(args.job_seconds, args.poll, args.runs, Path(tmp))
    report = render(figures, args.job_seconds, args.poll, args.quick, startup, notes)
    print(report)
    path = write_result("worker_slot", report, args.output)
    if path is not None:
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
