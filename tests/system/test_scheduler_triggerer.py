"""The Seedance operator through a real Airflow: api-server, scheduler, dag-processor, triggerer.

Unlike ``dag.test()``, which runs a trigger inline in one process, this is the path a deployment takes: the
worker submits and defers, the task's row goes to ``deferred``, a separate triggerer process runs
``SeedanceRequestTrigger`` against the emulator over HTTP, and the scheduler resumes the task on a worker.
One cluster serves every test of the module (starting one costs ~20 s on 2 cores).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator

import pytest

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.local_airflow import LocalAirflow
from tests._support import TEST_TOKEN, conn_json

pytestmark = pytest.mark.system

DAG_ID = "system_seedance_deferral"
TASK_ID = "generate"
IMAGE_URL = "https://example.com/first-frame.png"
RUN_TIMEOUT = 180.0

DAG_FILE = textwrap.dedent(
    f'''
    """Generate one video with the typed operator, deferrable, no retries (so every submit is counted)."""

    from __future__ import annotations

    from datetime import datetime

    from airflow.sdk import DAG

    from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator

    with DAG("{DAG_ID}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
        SeedanceImageToVideoOperator(
            task_id="{TASK_ID}",
            prompt="{{{{ params.get('prompt', 'A paper boat on a rainy street') }}}}",
            first_frame_image_url="{IMAGE_URL}",
            deferrable=True,
            poll_interval=0.5,
            timeout=120,
            retries=0,
        )
    '''
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[SeedanceEmulator]:
    """Serve the API emulator on 127.0.0.1 for the whole module, with a timeline long enough to defer."""
    with SeedanceEmulator(token=TEST_TOKEN, plan=JobPlan(queue_seconds=1.0, run_seconds=3.0)) as emu:
        yield emu


@pytest.fixture(scope="module")
def airflow(
    emulator: SeedanceEmulator,
    tmp_path_factory: pytest.TempPathFactory,
    start_airflow: Callable[..., LocalAirflow],
) -> LocalAirflow:
    """Start a real Airflow with the test DAG, ``seedance_default`` pointing at the emulator."""
    dags = tmp_path_factory.mktemp("dags")
    (dags / "system_seedance_deferral.py").write_text(DAG_FILE)
    instance = start_airflow(dags, env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": conn_json(emulator)})
    instance.wait_for_dags(DAG_ID)
    instance.unpause(DAG_ID)
    return instance


def _run(airflow: LocalAirflow, conf: dict[str, str] | None = None) -> tuple[str, str]:
    run_id = airflow.trigger(DAG_ID, conf=conf)
    return run_id, airflow.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)


def _log_text(airflow: LocalAirflow, run_id: str) -> str:
    ti = next(t for t in airflow.task_instances(DAG_ID, run_id) if t.task_id == TASK_ID)
    return "\n".join(p.read_text(errors="replace") for p in ti.log_files)


def test_task_defers_to_the_triggerer_then_succeeds(
    airflow: LocalAirflow, emulator: SeedanceEmulator
) -> None:
    submits_before = emulator.state.count("submit")

    run_id, state = _run(airflow)

    assert state == "success", airflow.log_excerpt() + "\n" + _log_text(airflow, run_id)
    (ti,) = [t for t in airflow.task_instances(DAG_ID, run_id) if t.task_id == TASK_ID]
    assert ti.state == "success"
    assert ti.try_number == 1
    # Deferred for real: the worker logged the deferral, and the triggerer wrote its own log for this try.
    assert ti.deferred
    assert ti.trigger_log_files, ti.log_files
    trigger_log = "\n".join(p.read_text(errors="replace") for p in ti.trigger_log_files)
    assert "Seedance request" in trigger_log
    assert "Trigger fired event" in trigger_log
    worker_log = ti.log_files[0].read_text(errors="replace")
    assert "Pausing task as DEFERRED" in worker_log
    # Exactly one paid submission for the whole run, and the status was polled from the triggerer.
    assert emulator.state.count("submit") - submits_before == 1
    result = airflow.xcom(DAG_ID, run_id, TASK_ID)
    assert result["status"] == "succeeded"
    assert result["request_id"] == airflow.xcom(DAG_ID, run_id, TASK_ID, key="request_id")
    assert isinstance(result["video_url"], str)
    assert result["video_url"].startswith("http")
    assert result["video_urls"] == [result["video_url"]]
    # The token lives only in the connection: not in task, trigger or component logs, nor in the metadata
    # DB (trigger kwargs, XComs, rendered fields).
    leaks = [
        path
        for path in airflow.home.rglob("*")
        if path.is_file() and path.suffix != ".cfg" and TEST_TOKEN.encode() in path.read_bytes()
    ]
    assert not leaks, f"the API token was found in {leaks}"


def test_failed_generation_fails_the_task_with_the_api_error(
    airflow: LocalAirflow, emulator: SeedanceEmulator
) -> None:
    emulator.plan_next(
        JobPlan(queue_seconds=0.5, run_seconds=1.5, outcome="fail", error="content policy violation")
    )
    submits_before = emulator.state.count("submit")

    run_id, state = _run(airflow)

    assert state == "failed"
    (ti,) = [t for t in airflow.task_instances(DAG_ID, run_id) if t.task_id == TASK_ID]
    assert ti.state == "failed"
    assert ti.deferred
    assert "content policy violation" in _log_text(airflow, run_id)
    assert emulator.state.count("submit") - submits_before == 1
