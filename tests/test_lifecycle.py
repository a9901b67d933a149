"""The request lifecycle's shared rules: timing arguments, the success rule, and 404 as read-after-write lag.

Each rule lives once in ``lifecycle.py`` (or, for success, on ``ResultResponse``); these tests pin
that the operators, the sensor and the trigger all apply it, over real HTTP against the emulator.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk import DAG

from airflow_provider_seedance import lifecycle
from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceRequestFailedError
from airflow_provider_seedance.models import ResultResponse
from airflow_provider_seedance.operators._request_store import STATE_KEY, StoredRequest, input_fingerprint
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.sensors.seedance import SeedanceRequestSensor
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests.operators._dag_support import (
    MODEL,
    START,
    CapturedLogs,
    FakeTaskInstance,
    FakeTaskStateStore,
    image_to_video,
    make_context,
    request_body,
    run_dag,
    submit_request,
    task_instances,
    unique_dag_id,
    xcom,
)

PROMPT = "A lighthouse beam sweeps through fog"
EXPECTED_BODY = request_body(PROMPT)
LAGGING = JobPlan(queue_seconds=0, run_seconds=0.1, not_found_seconds=0.4)
"""A request the API answers 404 for during its first 0.4 s, then finishes normally."""
HIDDEN = JobPlan(queue_seconds=0, run_seconds=0.1, not_found_seconds=30)
"""A request the API keeps calling unknown for the whole test."""


def i2v(**kwargs: Any) -> SeedanceImageToVideoOperator:
    return image_to_video(PROMPT, **kwargs)


def not_found_answers(emulator: SeedanceEmulator) -> int:
    return sum(r.status_code == 404 for r in emulator.state.requests("status"))


# -- one rule for timing arguments -----------------------------------------------------------------------

BUILDERS = {
    "operator": lambda value: i2v(poll_interval=value),
    "sensor": lambda value: SeedanceRequestSensor(task_id="wait", request_id="abc", poll_interval=value),
    "trigger": lambda value: SeedanceRequestTrigger(request_id="abc", poll_interval=value),
}


@pytest.mark.parametrize("who", sorted(BUILDERS))
@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True], ids=repr)
def test_every_component_refuses_the_same_bad_poll_interval(who: str, value: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="poll_interval must be a"):
        BUILDERS[who](value)


@pytest.mark.parametrize("who", sorted(BUILDERS))
def test_every_component_accepts_the_same_good_poll_interval(who: str) -> None:
    assert BUILDERS[who](0.5).poll_interval == 0.5


def test_an_endless_timeout_is_refused_before_any_call() -> None:
    # Infinity can be neither a deadline (epoch seconds) in the trigger's kwargs nor a deferral timeout.
    with pytest.raises(SeedanceConfigurationError, match="timeout must be a finite number"):
        i2v(timeout=float("inf"))


# -- the success rule --------------------------------------------------------------------------------------

VIDEO = {"video": "https://cdn.example.com/v.mp4"}


@pytest.mark.parametrize(
    ("answer", "success"),
    [
        ({"status": "succeeded", "output": VIDEO}, True),
        ({"status": "succeeded"}, True),  # success without a video: the task succeeds, a copy has nothing
        ({"status": "completed", "output": VIDEO}, True),
        ({"status": "completed", "output": VIDEO, "error": "moderation"}, False),
        ({"status": "completed", "output": {}}, False),
        ({"status": "completed"}, False),
        ({"status": "failed", "output": VIDEO}, False),
        ({"status": "cancelled"}, False),
        ({"status": "mystery_state", "output": VIDEO}, False),
        ({"status": "in_progress"}, False),
    ],
)
def test_the_tracker_uses_the_one_success_rule(answer: dict[str, Any], success: bool) -> None:
    result = ResultResponse.model_validate({"request_id": "R", **answer})
    assert result.succeeded is success
    outcome = lifecycle.RequestTracker("R", logging.getLogger("test")).outcome_from_result(result)
    assert (outcome is not None and outcome.status == "succeeded") is success


# -- 404 right after the submit is read-after-write lag, not "gone" ------------------------------------------


def test_sync_wait_survives_not_found_right_after_submit(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(LAGGING)
    result = i2v(deferrable=False).execute(make_context(store=FakeTaskStateStore()))

    assert result["status"] == "succeeded"
    assert emulator.state.count("submit") == 1
    assert not_found_answers(emulator) >= 2


def test_check_before_deferring_passes_the_submit_time_to_the_trigger(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(HIDDEN)
    store = FakeTaskStateStore()
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        i2v(deferrable=True).execute(make_context(store=store))

    # The 404 of the check before deferring did not fail the task, and the grace survives deferral: the
    # trigger (a fresh object in the triggerer) gets the submit time in its kwargs.
    assert not_found_answers(emulator) == 1
    kwargs = deferred.value.trigger.serialize()[1]
    assert before <= kwargs["submitted_at"] <= time.time()
    assert kwargs["submitted_at"] == store.values[STATE_KEY]["submitted_at"]


@pytest.mark.usefixtures("airflow_db")
def test_deferred_generation_survives_not_found_right_after_submit(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    # Long enough for the trigger, started after the check before deferring, to meet 404s too.
    emulator.set_plan(LAGGING.model_copy(update={"not_found_seconds": 3.0}))
    with DAG(unique_dag_id("seedance_lag"), schedule=None, start_date=START, catchup=False) as dag:
        i2v(deferrable=True, poll_interval=0.1)
    dag_run = run_dag(dag)

    assert str(task_instances(dag_run)[("generate", -1)].state) == "success"
    assert xcom(dag_run, "generate")["status"] == "succeeded"
    assert "[DAG TEST] running trigger in line" in logs.text()
    assert emulator.state.count("submit") == 1
    assert not_found_answers(emulator) >= 2


def _stored(request_id: str, submitted_at: float | None) -> FakeTaskStateStore:
    record = StoredRequest(request_id, MODEL, input_fingerprint(MODEL, EXPECTED_BODY), submitted_at)
    return FakeTaskStateStore(values={STATE_KEY: record.to_json()})


def test_retry_within_the_grace_reattaches_instead_of_paying_again(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    # Try 1 submitted a moment ago and failed for another reason; the API still answers 404 for it.
    submitted_at = time.time()
    old = submit_request(emulator, EXPECTED_BODY, HIDDEN)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(ti, _stored(old, submitted_at)))

    assert emulator.state.count("submit") == 1  # only the earlier try's
    assert ti.xcom_values["request_id"] == old
    kwargs = deferred.value.trigger.serialize()[1]
    assert (kwargs["request_id"], kwargs["submitted_at"]) == (old, submitted_at)
    assert len(logs.lines(f"Seedance request {old}, submitted by an earlier try, is not found")) == 1


@pytest.mark.parametrize("age", ["after-the-grace", "unknown"])
def test_retry_after_the_grace_takes_a_not_found_request_as_gone(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, age: str
) -> None:
    submitted_at = None if age == "unknown" else time.time() - lifecycle.NOT_FOUND_GRACE_SECONDS - 5
    emulator.set_plan(JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred):
        i2v().execute(make_context(ti, _stored("expired-request-id", submitted_at)))

    assert emulator.state.count("submit") == 1
    assert ti.xcom_values["request_id"] != "expired-request-id"
    assert len(logs.lines("no longer known")) == 1


def test_sync_wait_ends_when_not_found_outlasts_the_grace(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "NOT_FOUND_GRACE_SECONDS", 0.3)
    emulator.set_plan(HIDDEN)
    with pytest.raises(SeedanceRequestFailedError, match="was not found by the API"):
        i2v(deferrable=False).execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 1
    assert not_found_answers(emulator) >= 2


def test_records_written_before_the_submit_time_was_kept_still_load() -> None:
    digest = input_fingerprint(MODEL, EXPECTED_BODY)
    old = {"request_id": "abc", "model_id": MODEL, "input_sha256": digest}
    assert StoredRequest.from_json(old) == StoredRequest("abc", MODEL, digest, None)
    for junk in ("yesterday", float("nan"), True, [1]):
        assert StoredRequest.from_json({**old, "submitted_at": junk}) == StoredRequest("abc", MODEL, digest)
    assert StoredRequest.from_json({**old, "submitted_at": 17}).submitted_at == 17.0  # type: ignore[union-attr]
