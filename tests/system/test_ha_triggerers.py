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

import contextlib
import sqlite3
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.local_airflow import LocalAirflow, LocalAirflowError
from airflow_provider_seedance.version_compat import AIRFLOW_V_3_3_PLUS
from tests._support import TEST_TOKEN, conn_json
from tests.testing._helpers import FakeClock

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


def _dag_file(dag_id: str, prompts: list[str]) -> str:
    """Return a DAG file of one mapped, deferrable generation per prompt, with no retries."""
    return textwrap.dedent(
        f'''
        """Mapped deferrable generations, no retries (so every submit is counted)."""

        from __future__ import annotations

        from datetime import datetime

        from airflow.sdk import DAG

        from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator

        with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
            SeedanceImageToVideoOperator.partial(
                task_id="{TASK_ID}",
                first_frame_image_url="https://example.com/first-frame.png",
                deferrable=True,
                poll_interval=1.0,
                timeout=240,
                retries=0,
            ).expand(prompt={prompts!r})
        '''
    )


def _assignments(
    airflow: LocalAirflow, run_id: str, dag_id: str = DAG_ID
) -> dict[int, tuple[int, int | None]]:
    """map_index -> (trigger id, triggerer job id) of the run's deferred task instances."""
    rows = airflow.query(
        "SELECT ti.map_index, t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = "
        "t.id WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.state = 'deferred'",
        (dag_id, run_id),
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


def _two_triggerers(
    tmp_path: Path, emulator: SeedanceEmulator, dag_id: str, prompts: list[str], **config: str
) -> LocalAirflow:
    """Return an Airflow (not started yet) with two triggerers and the DAG of ``prompts`` as ``dag_id``."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(_dag_file(dag_id, prompts))
    return LocalAirflow(
        dags,
        home=tmp_path / "airflow-home",
        env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": conn_json(emulator)},
        triggerers=2,
        parallelism=len(prompts),
        config={"triggerer.job_heartbeat_sec": "1", **config},
    )


def test_killed_triggerer_hands_its_triggers_to_the_survivor(tmp_path: Path) -> None:
    with SeedanceEmulator(token=TEST_TOKEN, plan=PLAN) as emulator:
        airflow = _two_triggerers(
            tmp_path,
            emulator,
            DAG_ID,
            PROMPTS,
            **{
                "triggerer.capacity": str(CAPACITY),
                "triggerer.triggerer_health_check_threshold": str(HEALTH_CHECK_THRESHOLD),
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
                # Every trigger finished on the survivor (it wrote that try's trigger log). The killed
                # triggerer may have written one too: for its orphans, and for any trigger both triggerers
                # picked up at the start, before Airflow settled which one keeps it (seen on SQLite).
                trigger_logs = {p.name.rsplit(".trigger.", 1)[1] for p in ti.trigger_log_files}
                assert f"{survivor}.log" in trigger_logs, ti.log_files
                assert trigger_logs <= {f"{dead}.log", f"{survivor}.log"}, ti.log_files
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


# -- on_kill: a user's kill cancels the request, a hand-over to the other triggerer does not ---------------

KILL_DAG_ID = "system_seedance_trigger_on_kill"
KILL_PROMPTS = [f"On-kill generation {i}: a lantern in the fog" for i in range(3)]
KEPT_MESSAGE = "its task is still deferred"
"""What the trigger logs when it stops on a triggerer that lost it (SeedanceRequestTrigger.on_kill)."""


def _trigger_log(airflow: LocalAirflow, run_id: str, map_index: int, job: int) -> str:
    """Return what triggerer ``job`` logged for the trigger of ``map_index`` ('' before it logs anything)."""
    for ti in airflow.task_instances(KILL_DAG_ID, run_id):
        if ti.map_index == map_index:
            for path in ti.trigger_log_files:
                if path.name.endswith(f".trigger.{job}.log"):
                    return path.read_text(errors="replace")
    return ""


def _wait(what: str, done: Callable[[], bool], airflow: LocalAirflow, limit: float = DEFER_TIMEOUT) -> None:
    deadline = time.monotonic() + limit
    while not done():
        airflow.check_alive()
        if time.monotonic() > deadline:
            raise LocalAirflowError(f"never saw {what} within {limit:.0f} s\n{airflow.log_excerpt()}")
        time.sleep(0.5)


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="Airflow calls a trigger's on_kill from 3.3 on")
def test_a_user_kill_cancels_the_request_and_a_hand_over_does_not(tmp_path: Path) -> None:
    """
    Airflow 3.3.2 calls ``on_kill`` on a triggerer whose trigger was assigned to the other triggerer (its
    heartbeat was late, or both picked it up at once), as if a user had killed the task. The task is still
    deferred there, waiting for the other triggerer's copy: cancelling the request would fail it.
    """
    # The emulator's clock stands still until the end: every request stays queued, hence cancellable.
    frozen = FakeClock(time.monotonic())
    with SeedanceEmulator(token=TEST_TOKEN, plan=JobPlan(queue_seconds=5.0, run_seconds=1.0)) as emulator:
        emulator.state.clock = frozen
        airflow = _two_triggerers(tmp_path, emulator, KILL_DAG_ID, KILL_PROMPTS)
        try:
            airflow.start()
            airflow.wait_ready()
            airflow.wait_for_dags(KILL_DAG_ID)
            airflow.unpause(KILL_DAG_ID)
            run_id = airflow.trigger(KILL_DAG_ID)

            def all_deferred_and_polled() -> bool:
                assigned = _assignments(airflow, run_id, KILL_DAG_ID)
                polls = _polls(emulator)
                return (
                    len(assigned) == len(KILL_PROMPTS)
                    and all(job is not None for _, job in assigned.values())
                    and len(_heartbeats(airflow)) == 2
                    and all(polls[job.request_id] >= 1 for job in emulator.state.jobs())
                )

            _wait("every generation deferred, assigned and polled", all_deferred_and_polled, airflow)
            assigned = _assignments(airflow, run_id, KILL_DAG_ID)
            moved_map, killed_map = sorted(assigned)[:2]
            trigger_id, old_job = assigned[moved_map]
            assert old_job is not None
            (new_job,) = set(_heartbeats(airflow)) - {old_job}

            # What Airflow does to the triggers of a triggerer whose heartbeat is late, or what a race between
            # two triggerers picking the same trigger up leaves: the trigger now belongs to the other one.
            with contextlib.closing(sqlite3.connect(airflow.db_path, timeout=30)) as db:
                db.execute("UPDATE trigger SET triggerer_id = ? WHERE id = ?", (new_job, trigger_id))
                db.commit()
            _wait(
                "the old triggerer stop the moved trigger (Airflow 3.3.2 takes that for a kill: on_kill)",
                lambda: (
                    "trigger completed"
                    in _trigger_log(airflow, run_id, moved_map, old_job).partition("invoking on_kill")[2]
                ),
                airflow,
            )
            assert emulator.state.count("cancel") == 0
            assert KEPT_MESSAGE in _trigger_log(airflow, run_id, moved_map, old_job)
            _wait(
                "the new triggerer running the moved trigger",
                lambda: bool(_trigger_log(airflow, run_id, moved_map, new_job)),
                airflow,
            )
            assert emulator.state.count("cancel") == 0

            # A user marks another generation failed: its trigger's on_kill cancels the queued request.
            airflow.api(
                "PATCH",
                f"/api/v2/dags/{KILL_DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}/"
                f"{killed_map}",
                json={"new_state": "failed"},
            )
            _wait("the killed generation's cancel", lambda: emulator.state.count("cancel") >= 1, airflow)
            killed_request = airflow.xcom(
                KILL_DAG_ID, run_id, TASK_ID, key="request_id", map_index=killed_map
            )

            # The clock runs on: the other generations finish, the moved one on its new triggerer.
            offset = frozen.now + 30.0 - time.monotonic()
            emulator.state.clock = lambda: time.monotonic() + offset
            assert airflow.wait_for_run(KILL_DAG_ID, run_id, timeout=RUN_TIMEOUT) == "failed"

            states = {
                ti.map_index: (ti.state, ti.try_number) for ti in airflow.task_instances(KILL_DAG_ID, run_id)
            }
            expected = {m: ("success", 1) for m in range(len(KILL_PROMPTS))}
            expected[killed_map] = ("failed", 1)
            assert states == expected
            assert [call.request_id for call in emulator.state.requests("cancel")] == [killed_request]
            phases = {job.request_id: job.phase for job in emulator.state.jobs()}
            assert phases.pop(killed_request) == "cancelled"
            assert set(phases.values()) == {"succeeded"}
            assert emulator.state.count("submit") == len(KILL_PROMPTS)
        finally:
            airflow.stop()
            leftovers = airflow.running_processes()
        assert not leftovers, f"Airflow processes outlived stop(): {leftovers}"
