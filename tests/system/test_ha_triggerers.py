"""High availability: two triggerers, one SIGKILLed mid-run; the other takes its triggers over.

A real Airflow (api-server, scheduler with the LocalExecutor, dag-processor and TWO triggerer processes)
runs a DAG of six mapped, deferrable ``SeedanceImageToVideoOperator`` generations against the emulator.
Each triggerer may hold three triggers (``[triggerer] capacity``), so once all six tasks are deferred both
triggerers run three each. One triggerer is then SIGKILLed (its process group and its trigger runner), as
a crashed host would be: its job row stops heartbeating, and after ``[triggerer]
triggerer_health_check_threshold`` (lowered to a few seconds) the surviving triggerer assigns the orphaned
triggers to itself and resumes polling the requests the workers already submitted.

Asserted: the run succeeds, every generation succeeds with a video on try 1, the orphaned triggers were
run by both triggerers (one trigger log per triggerer), and the emulator saw exactly one submit per
generation (the takeover re-polls; it never re-submits).
"""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.local_airflow import LocalAirflow, LocalAirflowError
from tests._support import TEST_TOKEN, conn_json

pytestmark = pytest.mark.system

DAG_ID = "system_seedance_ha_triggerers"
TASK_ID = "generate"
PROMPTS = [f"HA generation {i}: a paper boat on a rainy street" for i in range(6)]
CAPACITY = len(PROMPTS) // 2
"""Triggers per triggerer: with both alive, each must hold exactly half of the generations."""
HEALTH_CHECK_THRESHOLD = 6
"""Seconds without a heartbeat after which a triggerer's triggers are up for grabs (default 30)."""
KILLED = "triggerer-2"
PLAN = JobPlan(queue_seconds=1.0, run_seconds=20.0)
"""Long enough that all six are still running on the emulator when the triggerer is killed."""
DEFER_TIMEOUT = 90.0
RUN_TIMEOUT = 120.0

DAG_FILE = textwrap.dedent(
    f'''
    """Six mapped deferrable generations, no retries (so every submit is counted)."""

    from __future__ import annotations

    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator

    with DAG("{DAG_ID}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
        SeedanceImageToVideoOperator.partial(
            task_id="{TASK_ID}",
            first_frame_image_url="https://example.com/first-frame.png",
            deferrable=True,
            poll_interval=1.0,
            timeout=240,
            retries=0,
        ).expand(prompt={PROMPTS!r})
    '''
)


def _assignments(airflow: LocalAirflow, run_id: str) -> dict[int, tuple[int, int | None]]:
    """map_index -> (trigger id, triggerer job id) of the run's deferred task instances."""
    rows = airflow.query(
        "SELECT ti.map_index, t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = "
        "t.id WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.state = 'deferred'",
        (DAG_ID, run_id),
    )
    return {int(m): (int(t), None if j is None else int(j)) for m, t, j in rows}


def _heartbeats(airflow: LocalAirflow) -> dict[int, str]:
    rows = airflow.query(
        "SELECT id, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' AND state = 'running'"
    )
    return {int(i): str(hb) for i, hb in rows}


def _polls(emulator: SeedanceEmulator) -> Counter[str | None]:
    return Counter(r.request_id for r in emulator.state.requests("status"))


def _wait_all_deferred(
    airflow: LocalAirflow, emulator: SeedanceEmulator, run_id: str
) -> dict[int, tuple[int, int | None]]:
    """
    Wait until every generation is deferred with its trigger assigned, both triggerers holding some, and
    every request polled twice already (the worker never polls before deferring: the triggers are running).
    """
    deadline = time.monotonic() + DEFER_TIMEOUT
    while True:
        airflow.check_alive()
        assigned = _assignments(airflow, run_id)
        per_job = Counter(job for _, job in assigned.values())
        polls = _polls(emulator)
        polled = [j.request_id for j in emulator.state.jobs() if polls[j.request_id] >= 2]
        if (
            len(assigned) == len(PROMPTS)
            and None not in per_job
            and len(per_job) == 2
            and len(polled) == len(PROMPTS)
        ):
            return assigned
        if airflow.run_state(DAG_ID, run_id) in ("success", "failed") or time.monotonic() > deadline:
            raise LocalAirflowError(
                f"never saw all {len(PROMPTS)} generations deferred and polled on two triggerers; last: "
                f"{assigned}, polls {dict(_polls(emulator))}, "
                f"tasks: {[(t.map_index, t.state) for t in airflow.task_instances(DAG_ID, run_id)]}\n"
                f"{airflow.log_excerpt()}"
            )
        time.sleep(0.5)


def _dead_job(airflow: LocalAirflow, jobs: set[int]) -> int:
    """Return the triggerer job whose heartbeat stopped (the other one keeps beating every second)."""
    before = _heartbeats(airflow)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _heartbeats(airflow)
        beating = {j for j in jobs if now.get(j) != before.get(j)}
        if len(beating) == 1:
            return (jobs - beating).pop()
    raise LocalAirflowError(
        f"could not tell which triggerer died from heartbeats {before} -> {_heartbeats(airflow)}"
    )


def _wait_for_run(airflow: LocalAirflow, run_id: str, orphans: set[int], survivor: int) -> set[int]:
    """Wait for the run to end; return the orphaned triggers seen re-assigned to the survivor."""
    taken_over: set[int] = set()
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        airflow.check_alive()
        for trigger_id, job in _assignments(airflow, run_id).values():
            if trigger_id in orphans and job == survivor:
                taken_over.add(trigger_id)
        state = airflow.run_state(DAG_ID, run_id)
        if state in ("success", "failed"):
            return taken_over
        if time.monotonic() > deadline:
            raise LocalAirflowError(
                f"run still {state!r} after {RUN_TIMEOUT:.0f} s; "
                f"assignments {_assignments(airflow, run_id)}, "
                f"tasks: {[(t.map_index, t.state) for t in airflow.task_instances(DAG_ID, run_id)]}\n"
                f"{airflow.log_excerpt()}"
            )
        time.sleep(0.5)


def test_killed_triggerer_hands_its_triggers_to_the_survivor(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "system_seedance_ha_triggerers.py").write_text(DAG_FILE)
    with SeedanceEmulator(token=TEST_TOKEN, plan=PLAN) as emulator:
        airflow = LocalAirflow(
            dags,
            home=tmp_path / "airflow-home",
            env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": conn_json(emulator)},
            triggerers=2,
            parallelism=len(PROMPTS),
            config={
                "triggerer.capacity": str(CAPACITY),
                "triggerer.triggerer_health_check_threshold": str(HEALTH_CHECK_THRESHOLD),
                "triggerer.job_heartbeat_sec": "1",
            },
        )
        try:
            started = time.monotonic()
            airflow.start()
            airflow.wait_ready()
            ready_in = time.monotonic() - started
            airflow.wait_for_dags(DAG_ID)
            airflow.unpause(DAG_ID)
            run_id = airflow.trigger(DAG_ID)

            before = _wait_all_deferred(airflow, emulator, run_id)
            jobs = {job for _, job in before.values() if job is not None}
            assert Counter(job for _, job in before.values()) == dict.fromkeys(jobs, CAPACITY)
            assert emulator.state.count("submit") == len(PROMPTS)
            # Nothing finished yet: every request is still queued or running on the emulator.
            assert all(job.phase in ("in_queue", "in_progress") for job in emulator.state.jobs())

            polls_at_kill = _polls(emulator)
            first_submit = min(job.created_at for job in emulator.state.jobs())
            kill_after_submit = time.time() - first_submit
            killed_at = time.monotonic()
            airflow.kill(KILLED)
            dead = _dead_job(airflow, jobs)
            (survivor,) = jobs - {dead}
            orphans = {trigger for trigger, job in before.values() if job == dead}
            orphan_maps = {m for m, (_, job) in before.items() if job == dead}
            assert len(orphans) == CAPACITY

            taken_over = _wait_for_run(airflow, run_id, orphans, survivor)
            state = airflow.run_state(DAG_ID, run_id)
            elapsed = time.monotonic() - killed_at

            tis = airflow.task_instances(DAG_ID, run_id)
            assert state == "success", f"{[(t.map_index, t.state) for t in tis]}\n{airflow.log_excerpt()}"
            assert sorted(t.map_index for t in tis) == list(range(len(PROMPTS)))
            for ti in tis:
                assert (ti.state, ti.try_number) == ("success", 1), ti
                assert ti.deferred, ti
                result = airflow.xcom(DAG_ID, run_id, TASK_ID, map_index=ti.map_index)
                assert result["status"] == "succeeded", result
                assert result["video_url"].startswith("http"), result
                # Every trigger finished on the survivor (it wrote that try's trigger log); the killed
                # triggerer may have written one for its orphans (if it flushed before it was killed).
                trigger_logs = {p.name.rsplit(".trigger.", 1)[1] for p in ti.trigger_log_files}
                allowed = {f"{dead}.log", f"{survivor}.log"} if ti.map_index in orphan_maps else set()
                assert f"{survivor}.log" in trigger_logs, ti.log_files
                assert trigger_logs <= allowed | {f"{survivor}.log"}, ti.log_files
            # The survivor took every orphan over (seen in the trigger table unless it fired at once), and
            # polled each orphaned request again after the kill.
            assert taken_over <= orphans
            polls_after = _polls(emulator) - polls_at_kill
            orphan_requests = {
                airflow.xcom(DAG_ID, run_id, TASK_ID, key="request_id", map_index=m) for m in orphan_maps
            }
            assert all(polls_after[r] >= 1 for r in orphan_requests), (orphan_requests, polls_after)
            # Exactly one paid submit per generation: the takeover polls the existing requests again.
            submitted = Counter(s.body["prompt"] for s in emulator.state.submits())
            assert submitted == dict.fromkeys(PROMPTS, 1)
            assert len({job.request_id for job in emulator.state.jobs()}) == len(PROMPTS)
            print(
                f"HA: started in {ready_in:.1f} s; killed {KILLED} (job {dead}) {kill_after_submit:.1f} s "
                f"after the first submit; job {survivor} finished all {elapsed:.1f} s later"
            )
        finally:
            airflow.stop()
            leftovers = airflow.running_processes()
        assert not leftovers, f"Airflow processes outlived stop(): {leftovers}"
