"""SeedanceRequestSensor over the emulator: poke and deferrable modes, success and failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, TaskDeferred
from airflow.sdk import DAG

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceInputError,
    SeedanceRequestFailedError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.sensors.seedance import SeedanceRequestSensor
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests.operators._dag_support import (
    IMAGE,
    START,
    CapturedLogs,
    make_context,
    run_dag,
    submit_request,
    task_instances,
    unique_dag_id,
    xcom,
)
from tests.testing._helpers import FakeClock

PAYLOAD = {"prompt": "Waves roll onto a black-sand beach", "first_frame_image_url": IMAGE}
STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")


def submit(emulator: SeedanceEmulator, plan: JobPlan) -> str:
    return submit_request(emulator, PAYLOAD, plan)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


@contextmanager
def clock_released_after_status_reads(emulator: SeedanceEmulator, reads: int) -> Iterator[None]:
    """Stop the emulator's clock until it has answered ``reads`` status reads, then let it run, far ahead."""
    frozen = FakeClock(time.monotonic())
    emulator.state.clock = frozen
    done = threading.Event()

    def release() -> None:
        while not done.is_set() and emulator.state.count("status") < reads:
            time.sleep(0.02)
        offset = frozen.now + 60.0 - time.monotonic()
        emulator.state.clock = lambda: time.monotonic() + offset

    watcher = threading.Thread(target=release, name="release-clock", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=5)


def sensor(request_id: str, **kwargs: Any) -> SeedanceRequestSensor:
    kwargs.setdefault("poll_interval", 0.05)
    return SeedanceRequestSensor(task_id="wait", request_id=request_id, **kwargs)


def test_defaults_and_template_fields() -> None:
    s = SeedanceRequestSensor(task_id="wait", request_id="abc")
    assert s.template_fields == ("request_id", "seedance_conn_id")
    assert (s.poll_interval, s.poke_interval, s.timeout) == (10.0, 10.0, 3600.0)
    assert s.seedance_conn_id == "seedance_default"
    assert s.operator_extra_links[0].name == "Seedance video"


def test_poke_mode_success(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    # Long enough for several pokes even when a loaded machine stalls the sensor for a while.
    request_id = submit(emulator, JobPlan(queue_seconds=1.0, run_seconds=1.0))
    result = sensor(request_id, deferrable=False).execute(make_context())

    assert result["request_id"] == request_id
    assert result["model_id"] is None
    assert result["status"] == "succeeded"
    assert result["video_url"].startswith(f"{emulator.base_url}/files/{request_id}/")
    assert result["video_urls"] == [result["video_url"]]
    assert emulator.state.count("status") >= 3
    assert emulator.state.count("result") == 1
    assert emulator.state.count("cancel") == 0


def test_poke_returns_false_while_running(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, STUCK)
    assert sensor(request_id).poke(make_context()) is False


def test_poke_mode_failure(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(
        emulator, JobPlan(queue_seconds=0, run_seconds=0.1, outcome="fail", error="bad frame")
    )
    with pytest.raises(SeedanceRequestFailedError, match=f"Seedance request {request_id} failed: bad frame"):
        sensor(request_id, deferrable=False).execute(make_context())


def test_poke_mode_timeout_does_not_cancel(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, STUCK)
    with pytest.raises(AirflowSensorTimeout):
        sensor(request_id, deferrable=False, timeout=0.3).execute(make_context())
    assert emulator.state.count("cancel") == 0


def test_poke_rejects_a_malformed_request_id(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    with pytest.raises(SeedanceInputError, match="request_id"):
        sensor("not a request id").poke(make_context())
    assert emulator.state.requests() == []


def test_deferrable_defers_to_the_trigger(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, STUCK)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor(request_id, deferrable=True, timeout=120).execute(make_context())

    trigger = deferred.value.trigger
    assert isinstance(trigger, SeedanceRequestTrigger)
    kwargs = trigger.serialize()[1]
    assert (kwargs["request_id"], kwargs["poll_interval"]) == (request_id, 0.05)
    assert before + 120 <= kwargs["end_time"] <= time.time() + 120
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout > timedelta(seconds=120)
    assert emulator.state.count("status") == 1


def test_deferrable_returns_at_once_when_already_done(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0))
    time.sleep(0.1)
    result = sensor(request_id, deferrable=True).execute(make_context())
    assert result["request_id"] == request_id
    assert result["status"] == "succeeded"


def test_execute_complete_outcomes() -> None:
    s = sensor("R")
    with pytest.raises(AirflowSensorTimeout, match="did not finish"):
        s.execute_complete(
            make_context(),
            {"status": "timeout", "request_id": "R", "result": None, "message": "R did not finish."},
        )
    with pytest.raises(SeedanceRequestFailedError, match="was cancelled"):
        s.execute_complete(
            make_context(),
            {"status": "cancelled", "request_id": "R", "result": None, "message": "R was cancelled."},
        )


# -- whole DAGs --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_sensor_waits_for_a_request_submitted_upstream(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    deferrable: bool,
    logs: CapturedLogs,
    stack: ExitStack,
) -> None:
    # The deferrable sensor must find the request still queued, or it rightly returns without deferring.
    # The submit task's end and the sensor's start can take seconds (more on a loaded machine), so the
    # emulator's clock stands still until the trigger has polled once: the first poke always sees a queue.
    emulator.set_plan(JobPlan(queue_seconds=1.0, run_seconds=0.2))
    if deferrable:
        stack.enter_context(clock_released_after_status_reads(emulator, 2))
    with DAG(unique_dag_id("seedance_sensor"), schedule=None, start_date=START, catchup=False) as dag:
        submit_task = SeedanceImageToVideoOperator(
            task_id="submit", prompt="A paper plane", first_frame_image_url=IMAGE, wait_for_completion=False
        )
        wait = SeedanceRequestSensor(
            task_id="wait",
            request_id="{{ ti.xcom_pull('submit', key='request_id') }}",
            deferrable=deferrable,
            poll_interval=0.1,
        )
        submit_task >> wait
    dag_run = run_dag(dag)

    assert str(task_instances(dag_run)[("wait", -1)].state) == "success"
    assert ("[DAG TEST] running trigger in line" in logs.text()) is deferrable
    request_id = xcom(dag_run, "submit", "request_id")
    result = xcom(dag_run, "wait")
    assert result["request_id"] == request_id
    assert result["status"] == "succeeded"
    assert result["video_url"].startswith(f"{emulator.base_url}/files/{request_id}/")
    assert emulator.state.count("submit") == 1


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_sensor_fails_when_the_request_fails(
    emulator: SeedanceEmulator, seedance_conn: str, deferrable: bool
) -> None:
    request_id = submit(
        emulator, JobPlan(queue_seconds=0, run_seconds=0.2, outcome="fail", error="bad frame")
    )
    with DAG(unique_dag_id("seedance_sensor_fail"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceRequestSensor(task_id="wait", request_id=request_id, deferrable=deferrable, poll_interval=0.1)
    dag_run = run_dag(dag)
    assert str(task_instances(dag_run)[("wait", -1)].state) == "failed"


# -- ownership: the sensor never cancels ------------------------------------------------------------------


async def test_killing_the_deferred_sensor_cancels_nothing(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    # Airflow 3.3 calls the trigger's on_kill when a deferred sensor is marked failed/success or cleared.
    request_id = submit(emulator, STUCK)
    with pytest.raises(TaskDeferred) as deferred:
        sensor(request_id, deferrable=True).execute(make_context())
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["cancel_on_kill"] is False

    # What the triggerer runs: the trigger rebuilt from the stored kwargs.
    rebuilt = SeedanceRequestTrigger(**kwargs)
    await rebuilt.on_kill()
    assert emulator.state.count("cancel") == 0
    hook = SeedanceHook()
    try:
        assert hook.get_status(request_id).status == "in_queue"
    finally:
        hook.close()


# -- soft_fail / never_fail: the same outcome before and after deferral ---------------------------------


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    ("when", "flags"),
    [
        ("before-deferral", {"soft_fail": True}),
        ("after-deferral", {"soft_fail": True}),
        ("before-deferral", {"never_fail": True}),
        ("after-deferral", {"never_fail": True}),
    ],
    ids=["soft_fail-first-check", "soft_fail-trigger", "never_fail-first-check", "never_fail-trigger"],
)
def test_the_same_failure_gets_the_same_outcome_before_and_after_deferral(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, when: str, flags: dict[str, bool]
) -> None:
    # One failure (the API answers with an error body), met by the sensor's own first check or by the
    # trigger after deferral: skip=1 lets the first check through.
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=60, outcome="stuck_running"))
    skip = 0 if when == "before-deferral" else 1
    emulator.add_fault(Fault(kind="error_200", endpoint="status", skip=skip, times=None))
    with DAG(unique_dag_id("seedance_sensor_soft"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceRequestSensor(
            task_id="wait", request_id=request_id, deferrable=True, poll_interval=0.1, **flags
        )
    dag_run = run_dag(dag)

    assert str(task_instances(dag_run)[("wait", -1)].state) == "skipped"
    assert ("[DAG TEST] running trigger in line" in logs.text()) is (when == "after-deferral")
    assert emulator.state.count("cancel") == 0


@pytest.mark.usefixtures("airflow_db")
def test_soft_fail_skips_a_request_that_failed_before_the_first_check(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0, outcome="fail", error="bad frame"))
    with DAG(unique_dag_id("seedance_sensor_soft"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceRequestSensor(
            task_id="wait", request_id=request_id, deferrable=True, poll_interval=0.1, soft_fail=True
        )
    dag_run = run_dag(dag)

    assert str(task_instances(dag_run)[("wait", -1)].state) == "skipped"
    assert "[DAG TEST] running trigger in line" not in logs.text()


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 10**12, timedelta(days=10**5)])
def test_a_timeout_deferral_could_not_hold_is_refused_at_once(timeout: Any) -> None:
    # Deferring adds the timeout to the current date: endless or absurd ones would fail there, every poke.
    with pytest.raises(SeedanceConfigurationError, match="timeout"):
        SeedanceRequestSensor(task_id="wait", request_id="abc", timeout=timeout)


@pytest.mark.parametrize("timeout", [0, 60, timedelta(days=7), 365 * 24 * 3600])
def test_ordinary_sensor_timeouts_are_kept(timeout: Any) -> None:
    sensor = SeedanceRequestSensor(task_id="wait", request_id="abc", timeout=timeout)
    expected = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    assert sensor.timeout == expected
