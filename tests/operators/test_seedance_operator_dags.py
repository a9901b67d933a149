"""Whole DAGs through dag.test(): the deferrable path runs the real trigger in-process, retries are real."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import RequestStatus
from airflow_provider_seedance.operators.seedance import (
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
)
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.version_compat import AIRFLOW_V_3_1_PLUS
from tests.operators._dag_support import (
    IMAGE,
    MODEL,
    START,
    CapturedLogs,
    assert_retry_reattaches_through_a_variable,
    in_background,
    offline_hook,
    request_state,
    run_dag,
    spy_variable_saves,
    task_instances,
    unique_dag_id,
    wait_for,
    xcom,
)

pytestmark = pytest.mark.usefixtures("airflow_db")

STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")


def i2v_dag(name: str, **op_kwargs: Any) -> DAG:
    with DAG(unique_dag_id(name), schedule=None, start_date=START, catchup=False) as dag:
        kwargs: dict[str, Any] = {
            "task_id": "generate",
            "prompt": "{{ params.prompt }}",
            "first_frame_image_url": IMAGE,
            "poll_interval": 0.1,
            **op_kwargs,
        }
        SeedanceImageToVideoOperator(**kwargs)
    dag.params["prompt"] = "A hot-air balloon rises over a canyon"
    return dag


def state_of(dag_run: Any, task_id: str = "generate", map_index: int = -1) -> str:
    return str(task_instances(dag_run)[(task_id, map_index)].state)


def test_deferrable_success(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    logs: CapturedLogs,
) -> None:
    # Queued long enough for the check before deferring to find it waiting, even on a loaded machine.
    emulator.set_plan(JobPlan(queue_seconds=2.0, run_seconds=0.2))
    dag_run = run_dag(i2v_dag("seedance_success", deferrable=True))

    assert state_of(dag_run) == "success"
    out = logs.text()
    assert "Pausing task as DEFERRED" in out
    assert "[DAG TEST] running trigger in line" in out
    request_id = xcom(dag_run, "generate", "request_id")
    [submit] = emulator.state.requests("submit")
    assert [job.request_id for job in emulator.state.jobs()] == [request_id]
    # Templated, then validated, then sent with the exact schema keys.
    assert submit.body == {
        "prompt": "A hot-air balloon rises over a canyon",
        "first_frame_image_url": IMAGE,
        "resolution": "480p",
        "ratio": "adaptive",
        "duration": 5,
        "generate_audio": True,
        "camera_fixed": True,
    }
    hook = SeedanceHook()
    api_result = hook.get_result(request_id, include_cost=True)
    hook.close()
    video = api_result.output["video"]  # type: ignore[index]
    assert xcom(dag_run, "generate") == {
        "request_id": request_id,
        "model_id": MODEL,
        "status": "succeeded",
        "video_url": video,
        "video_urls": [video],
        "image_urls": [],
        "output": api_result.output,
        "cost": api_result.cost,
    }
    # The extra link is resolved when the task ends.
    assert xcom(dag_run, "generate", "_link_SeedanceVideoLink") == video


def test_api_failure_fails_the_task(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    logs: CapturedLogs,
) -> None:
    emulator.set_plan(
        JobPlan(queue_seconds=0.1, run_seconds=0.2, outcome="fail", error="content policy violation")
    )
    dag_run = run_dag(i2v_dag("seedance_failure"))

    assert state_of(dag_run) == "failed"
    assert str(dag_run.state) == "failed"
    assert emulator.state.count("submit") == 1
    assert "failed: content policy violation" in logs.text()


def test_request_cancelled_elsewhere_fails_the_task(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)

    def cancel_when_submitted() -> None:
        # dag.test() can take many seconds to start the task on a loaded machine.
        wait_for(lambda: len(emulator.state.jobs()) == 1, limit=240)
        hook = offline_hook(emulator)
        hook.cancel(emulator.state.jobs()[0].request_id)
        hook.close()

    canceller = in_background(cancel_when_submitted)
    dag_run = run_dag(i2v_dag("seedance_cancel", timeout=30))
    canceller.join(5)
    assert not canceller.is_alive()

    assert state_of(dag_run) == "failed"
    assert request_state(xcom(dag_run, "generate", "request_id")) is RequestStatus.CANCELLED
    assert emulator.state.count("submit") == 1


def test_deadline_cancels_the_queued_request_and_fails(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    dag_run = run_dag(i2v_dag("seedance_deadline", timeout=1))

    assert state_of(dag_run) == "failed"
    request_id = xcom(dag_run, "generate", "request_id")
    assert emulator.state.count("cancel") == 1
    assert request_state(request_id) is RequestStatus.CANCELLED


def test_sync_mode(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    dag_run = run_dag(i2v_dag("seedance_sync", deferrable=False))
    assert state_of(dag_run) == "success"
    result = xcom(dag_run, "generate")
    assert result["status"] == "succeeded"
    assert result["request_id"] == xcom(dag_run, "generate", "request_id")
    assert emulator.state.count("submit") == 1


def test_no_wait(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    dag_run = run_dag(i2v_dag("seedance_no_wait", wait_for_completion=False))
    assert state_of(dag_run) == "success"
    request_id = xcom(dag_run, "generate", "request_id")
    assert xcom(dag_run, "generate") == {"request_id": request_id, "model_id": MODEL, "status": "submitted"}
    assert emulator.state.count("status") == 0


def test_mapping_over_three_prompts(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    prompts = ["A whale breaches at sunrise", "A city tram in the rain", "Fireflies over a pond"]
    with DAG(unique_dag_id("seedance_mapped"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceImageToVideoOperator.partial(
            task_id="generate", first_frame_image_url=IMAGE, poll_interval=0.1, duration=4
        ).expand(prompt=prompts)
    dag_run = run_dag(dag)

    assert {state_of(dag_run, map_index=i) for i in range(3)} == {"success"}
    submits = emulator.state.requests("submit")
    assert sorted(s.body["prompt"] for s in submits) == sorted(prompts)
    results = [xcom(dag_run, "generate", map_index=i) for i in range(3)]
    assert len({r["request_id"] for r in results}) == 3
    assert {r["request_id"] for r in results} == {job.request_id for job in emulator.state.jobs()}


def test_generic_operator_with_templated_input(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    with DAG(unique_dag_id("seedance_generic"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceSubmitOperator(
            task_id="generate",
            model_id="bytedance/seedance-2.5/image-to-video/720p",
            input={"prompt": "{{ params.p }}", "image": IMAGE, "duration": 6},
            poll_interval=0.1,
        )
    dag.params["p"] = "A sailboat tacks"
    dag_run = run_dag(dag)

    assert state_of(dag_run) == "success"
    [submit] = emulator.state.requests("submit")
    assert submit.model_id == "bytedance/seedance-2.5/image-to-video/720p"
    assert submit.body == {"prompt": "A sailboat tacks", "image": IMAGE, "duration": 6}
    assert xcom(dag_run, "generate")["model_id"] == "bytedance/seedance-2.5/image-to-video/720p"


def test_input_error_fails_without_any_request(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    dag_run = run_dag(i2v_dag("seedance_bad_input", duration="{{ 3 * 10 }}", retries=2))
    ti = task_instances(dag_run)[("generate", -1)]
    assert str(ti.state) == "failed"
    assert ti.try_number == 1  # SeedanceInputError is an AirflowFailException: no retry
    assert emulator.state.requests() == []


# -- retries never pay twice ---------------------------------------------------------------------------------


def _clear_faults_once_the_first_try_gives_up(emulator: SeedanceEmulator) -> None:
    # The first try ends at its deadline by trying to cancel; from then on the API is healthy again. On a
    # loaded machine dag.test() can take a minute to get there: the wait is bounded by the test's timeout.
    wait_for(lambda: emulator.state.count("cancel") >= 1, limit=240)
    emulator.clear_faults()


@pytest.mark.xfail(
    not AIRFLOW_V_3_1_PLUS,
    strict=True,
    reason="Airflow 3.0 keeps next_method/next_kwargs when a resumed task fails: try 2 re-runs "
    "execute_complete with try 1's timeout event (fixed in 3.1; no second submit either way)",
)
def test_retry_after_a_polling_outage_submits_once(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    """
    An outage outlasting the hook's retries and the deadline fails try 1; try 2 re-attaches, pays nothing.

    The status endpoint is down for the whole first try (every call exhausts the hook's 3 retries, the
    trigger keeps polling until the deadline), so try 1 fails with a timeout. The video was generated
    meanwhile: try 2 reads the stored request id, finds it succeeded and returns it.
    """
    emulator.set_plan(JobPlan(queue_seconds=0.2, run_seconds=0.3))
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=None))
    emulator.add_fault(Fault(kind="http_error", endpoint="cancel", status_code=503, times=1))
    healer = in_background(lambda: _clear_faults_once_the_first_try_gives_up(emulator))

    dag_run = run_dag(i2v_dag("seedance_retry_outage", timeout=1.5, retries=1, retry_delay=timedelta(0)))
    healer.join(5)
    assert not healer.is_alive()

    ti = task_instances(dag_run)[("generate", -1)]
    assert str(ti.state) == "success"
    assert ti.try_number == 2
    assert emulator.state.count("submit") == 1
    failed_status_reads = [r for r in emulator.state.requests("status") if r.fault]
    assert len(failed_status_reads) > 4  # more than one call's worth of retries
    result = xcom(dag_run, "generate")
    assert result["status"] == "succeeded"
    assert result["request_id"] == emulator.state.jobs()[0].request_id


def test_retry_after_an_error_event_reattaches(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0.5, run_seconds=0.3))
    # A permanent-looking error on the first status read fails try 1 at once.
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=401, times=1))
    dag_run = run_dag(i2v_dag("seedance_retry_error", retries=1, retry_delay=timedelta(0)))

    ti = task_instances(dag_run)[("generate", -1)]
    assert str(ti.state) == "success"
    assert ti.try_number == 2
    assert emulator.state.count("submit") == 1
    assert xcom(dag_run, "generate")["request_id"] == emulator.state.jobs()[0].request_id


def test_retry_without_task_state_store_uses_a_variable(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Airflow 3.0-3.2 the context has no task_state_store: the request id goes to a Variable."""
    keys = spy_variable_saves(monkeypatch)
    dag = i2v_dag("seedance_retry_variable", retries=1, retry_delay=timedelta(0))
    assert_retry_reattaches_through_a_variable(emulator, dag, keys)
