"""The API token never reaches trigger kwargs, events, XCom, the task state store or the task logs."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk import DAG

from airflow_provider_seedance.hooks.seedance import aclose_shared_clients
from airflow_provider_seedance.operators._request_store import STATE_KEY, variable_key
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.version_compat import AIRFLOW_V_3_3_PLUS
from tests._compat import without_dag_test_mask_echo
from tests._support import TEST_TOKEN
from tests.operators._dag_support import (
    IMAGE,
    START,
    CapturedLogs,
    FakeTaskStateStore,
    make_context,
    run_dag,
    task_instances,
    unique_dag_id,
    xcoms,
)

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_trigger_kwargs_repr_and_event_hold_no_token(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    logs: CapturedLogs,
) -> None:
    assert emulator.token == TEST_TOKEN
    emulator.set_plan(JobPlan(queue_seconds=0.1, run_seconds=0.1))
    op = SeedanceImageToVideoOperator(
        task_id="generate", prompt="A koi pond", first_frame_image_url=IMAGE, poll_interval=0.05
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(store=FakeTaskStateStore()))
    trigger = deferred.value.trigger
    kwargs = trigger.serialize()[1]

    async def run() -> Any:
        try:
            return (await trigger.run().__anext__()).payload
        finally:
            await aclose_shared_clients()

    payload = asyncio.run(run())
    assert payload["status"] == "succeeded"
    # The hook (built in run()) holds the token, but kwargs and repr are computed from serialize().
    exposed = [
        json.dumps(kwargs),
        repr(trigger),
        str(trigger),
        json.dumps(payload),
        json.dumps(deferred.value.kwargs),
    ]
    output = logs.text()
    assert f"Seedance request {trigger.request_id} is queued" in output  # the task's log was captured
    assert f"Seedance request {trigger.request_id} succeeded" in output  # and the trigger's
    exposed.append(output)
    assert all(TEST_TOKEN not in text for text in exposed)
    assert set(kwargs) == {
        "request_id",
        "seedance_conn_id",
        "poll_interval",
        "end_time",
        "cancel_on_kill",
        "submitted_at",
    }


@pytest.mark.parametrize("outcome", ["succeed", "fail"])
def test_dag_run_leaves_no_token_in_xcom_state_or_logs(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    logs: CapturedLogs,
    outcome: str,
) -> None:
    # Queued long enough for the check before deferring to find it waiting: the trigger logs too.
    emulator.set_plan(JobPlan(queue_seconds=2.0, run_seconds=0.2, outcome=outcome, error="nope"))
    with DAG(unique_dag_id(f"seedance_leak_{outcome}"), schedule=None, start_date=START) as dag:
        SeedanceImageToVideoOperator(
            task_id="generate", prompt="A koi pond", first_frame_image_url=IMAGE, poll_interval=0.05
        )
    dag_run = run_dag(dag)
    expected_state = "success" if outcome == "succeed" else "failed"
    assert str(task_instances(dag_run)[("generate", -1)].state) == expected_state

    values = xcoms(dag_run)
    assert {key for _, _, key, _ in values} >= {"request_id"}
    state_rows = _task_state(dag_run)
    if outcome == "fail":
        # The request id stays stored for a retry, with a retention that outlives the task's tries.
        [(key, value, expires_at)] = state_rows
        assert json.loads(value)["request_id"] == emulator.state.jobs()[0].request_id
        if AIRFLOW_V_3_3_PLUS:
            assert key == STATE_KEY
            assert expires_at > datetime.now(timezone.utc) + timedelta(days=6)
        else:  # a Variable, kept until the task succeeds
            assert key == variable_key(dag_run.dag_id, "generate", dag_run.run_id, -1)
    else:
        assert state_rows == []  # dropped on success

    output = without_dag_test_mask_echo(logs.text())
    # The task's, the hook's and the trigger's logs were really captured.
    assert "Submitted a bytedance/seedance-v1.5-pro/image-to-video generation" in output
    assert "[DAG TEST] running trigger in line" in output
    assert f"Seedance request {emulator.state.jobs()[0].request_id}" in output
    texts = [json.dumps(values, default=str), json.dumps(state_rows, default=str), output]
    assert all(TEST_TOKEN not in text for text in texts)


def _task_state(dag_run: Any) -> list[tuple[str, str, datetime | None]]:
    """Return the stored request records of the run: ``task_state_store`` rows (3.3+), else Variables."""
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        if not AIRFLOW_V_3_3_PLUS:
            from airflow.models.variable import Variable

            key = variable_key(dag_run.dag_id, "generate", dag_run.run_id, -1)
            found = session.scalars(select(Variable).where(Variable.key == key)).all()
            return [(v.key, v.val, None) for v in found]
        from airflow.models.task_state_store import TaskStateStoreModel

        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_run.dag_id, TaskStateStoreModel.run_id == dag_run.run_id
            )
        ).all()
        return [(r.key, r.value, r.expires_at) for r in rows]
