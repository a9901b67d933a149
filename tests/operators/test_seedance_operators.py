"""The generation operators driven directly (execute / execute_complete) against the emulator over HTTP."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceError,
    SeedanceInputError,
    SeedanceRequestFailedError,
    SeedanceTimeoutError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.lifecycle import (
    DEFER_TIMEOUT_GRACE_SECONDS,
    MAX_WAIT_SECONDS,
    default_deferrable,
)
from airflow_provider_seedance.models import RequestStatus, SeedanceImageToVideoInput
from airflow_provider_seedance.operators._request_store import (
    MIN_RETENTION,
    STATE_KEY,
    input_fingerprint,
)
from airflow_provider_seedance.operators.seedance import (
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
)
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests.operators._dag_support import (
    MODEL,
    CapturedLogs,
    FakeTaskInstance,
    FakeTaskStateStore,
    image_to_video,
    make_context,
    request_body,
    request_state,
    submit_request,
    wait_for,
)

PROMPT = "A red fox runs through fresh snow"
EXPECTED_BODY = request_body(PROMPT)
STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")
INSTANT = JobPlan(queue_seconds=0, run_seconds=0)


def i2v(**kwargs: Any) -> SeedanceImageToVideoOperator:
    return image_to_video(PROMPT, **kwargs)


def submit_directly(emulator: SeedanceEmulator, plan: JobPlan) -> str:
    return submit_request(emulator, EXPECTED_BODY, plan)


def expected_result(request_id: str, result: dict[str, Any], model_id: str | None = MODEL) -> dict[str, Any]:
    video = result["output"]["video"]
    return {
        "request_id": request_id,
        "model_id": model_id,
        "status": "succeeded",
        "video_url": video,
        "video_urls": [video],
        "image_urls": [],
        "output": result["output"],
        "cost": result.get("cost"),
    }


# -- construction ------------------------------------------------------------------------------------------


def test_template_fields_cover_every_input() -> None:
    assert set(SeedanceImageToVideoOperator.template_fields) == {
        "model_id",
        "seedance_conn_id",
        *SeedanceImageToVideoInput.model_fields,
    }
    assert set(SeedanceSubmitOperator.template_fields) == {"model_id", "input", "seedance_conn_id"}
    assert SeedanceSubmitOperator.template_fields_renderers == {"input": "json"}
    assert SeedanceImageToVideoOperator.operator_extra_links[0].name == "Seedance video"


def test_defaults() -> None:
    op = i2v(poll_interval=10)
    assert (op.model_id, op.resolution, op.ratio, op.duration) == (MODEL, "480p", "adaptive", 5)
    assert (op.generate_audio, op.camera_fixed, op.seedance_conn_id) == (True, True, "seedance_default")
    assert (op.wait_for_completion, op.poll_interval, op.timeout, op.durable) == (True, 10.0, 3600.0, True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, True), ("false", False), ("False", False), ("true", True)],
)
def test_deferrable_default_honours_operators_default_deferrable(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", env)
    assert default_deferrable() is expected
    assert i2v().deferrable is expected
    assert i2v(deferrable=not expected).deferrable is (not expected)


@pytest.mark.parametrize(
    ("in_file", "env", "expected"),
    [
        # Airflow 3 writes every option into a new airflow.cfg: a file repeating the built-in false
        # must not switch deferral off ...
        ("false", None, True),
        # ... a file that chose true, or the environment, is honoured.
        ("true", None, True),
        ("false", "false", False),
        ("true", "false", False),
    ],
)
def test_deferrable_default_with_a_written_airflow_cfg(
    monkeypatch: pytest.MonkeyPatch, in_file: str, env: str | None, expected: bool
) -> None:
    from configparser import ConfigParser

    from airflow.providers.common.compat.sdk import conf

    had_section = ConfigParser.has_section(conf, "operators")
    if not had_section:
        ConfigParser.add_section(conf, "operators")
    had = ConfigParser.has_option(conf, "operators", "default_deferrable")
    previous = ConfigParser.get(conf, "operators", "default_deferrable", raw=True) if had else None
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    if env is not None:
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", env)
    ConfigParser.set(conf, "operators", "default_deferrable", in_file)
    try:
        assert ConfigParser.has_option(conf, "operators", "default_deferrable")
        assert default_deferrable() is expected
        assert i2v().deferrable is expected
    finally:
        if had:
            ConfigParser.set(conf, "operators", "default_deferrable", previous)
        else:
            ConfigParser.remove_option(conf, "operators", "default_deferrable")
        if not had_section:
            ConfigParser.remove_section(conf, "operators")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("poll_interval", 0),
        ("timeout", -1),
        ("timeout", True),
        ("timeout", float("inf")),
        # Airflow adds a deferral's timeout to the current date: 10**12 s overflows it, after the submit.
        ("timeout", 10**12),
        ("poll_interval", 1e12),
    ],
)
def test_rejects_bad_timings(name: str, value: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match=name):
        i2v(**{name: value})


def test_the_longest_timeout_still_defers_to_a_representable_date(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(JobPlan(queue_seconds=30, run_seconds=1))
    with pytest.raises(TaskDeferred) as deferred:
        i2v(timeout=MAX_WAIT_SECONDS, deferrable=True).execute(make_context(store=FakeTaskStateStore()))
    assert deferred.value.timeout is not None
    # What Airflow's task runner computes when it records the deferral.
    assert datetime.now(timezone.utc) + deferred.value.timeout > datetime.now(timezone.utc)


def test_unknown_argument_fails_at_parse_time() -> None:
    with pytest.raises(TypeError, match="aspect_ratio"):
        i2v(aspect_ratio="16:9")


def test_state_retention_outlives_every_try() -> None:
    assert i2v().state_retention() == MIN_RETENTION
    long = i2v(timeout=86400, retries=10, retry_delay=timedelta(hours=2))
    per_try = timedelta(seconds=86400 + DEFER_TIMEOUT_GRACE_SECONDS)
    assert long.state_retention() == per_try * 11 + timedelta(hours=2) * 10


# -- validation before any HTTP call ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"duration": 20}, "duration"),
        ({"duration": 5.5}, "duration"),
        ({"resolution": "4k"}, "resolution"),
        ({"ratio": "2:1"}, "ratio"),
        ({"prompt": "   "}, "prompt"),
        ({"first_frame_image_url": "ftp://example.com/x.png"}, "first_frame_image_url"),
        ({"generate_audio": "yes"}, "generate_audio"),
        ({"model_id": "not a model"}, "model_id"),
    ],
)
def test_typed_input_errors_raise_before_any_request(
    emulator: SeedanceEmulator, seedance_conn: str, changes: dict[str, Any], field: str
) -> None:
    op = i2v(**changes)
    with pytest.raises(SeedanceInputError, match=field):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []


@pytest.mark.parametrize(
    ("model_id", "input_", "match"),
    [
        ("bad model id", {"prompt": "x"}, "model_id"),
        (MODEL, {"prompt": float("nan")}, r"^input\.prompt: every value must be JSON-serialisable \(nan "),
        (MODEL, {"prompt": object()}, r"^input\.prompt: .*\(a value of type object has no JSON form"),
        (MODEL, {"shots": [{"seed": 1}, {"seed": float("inf")}]}, r"^input\.shots\[1\]\.seed: .*\(inf "),
        (MODEL, {"tags": {"a", "b"}}, r"^input\.tags: .*a value of type set has no JSON form"),
        (MODEL, {"extra": {("a", 1): 2}}, r"^input\.extra: .*a key of type tuple"),
        (MODEL, "not json", "not JSON"),
        (MODEL, ["prompt"], "mapping"),
    ],
)
def test_generic_input_errors_raise_before_any_request(
    emulator: SeedanceEmulator, seedance_conn: str, model_id: str, input_: Any, match: str
) -> None:
    op = SeedanceSubmitOperator(task_id="generate", model_id=model_id, input=input_)
    with pytest.raises(SeedanceInputError, match=match):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []


def test_generic_operator_accepts_a_rendered_json_string(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    op = SeedanceSubmitOperator(
        task_id="generate",
        model_id="bytedance/seedance-v2/pro",
        input=json.dumps({"prompt": "hi", "seed": 7}),
    )
    with pytest.raises(TaskDeferred):
        op.execute(make_context(store=FakeTaskStateStore()))
    [submit] = emulator.state.requests("submit")
    assert submit.model_id == "bytedance/seedance-v2/pro"
    assert submit.body == {"prompt": "hi", "seed": 7}


# -- deferrable path ---------------------------------------------------------------------------------------


def test_defers_after_submit_with_id_stored_and_pushed(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    store = FakeTaskStateStore()
    ti = FakeTaskInstance()
    op = i2v(timeout=600, deferrable=True)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(ti, store))

    [submit] = emulator.state.requests("submit")
    request_id = ti.xcom_values["request_id"]
    assert submit.body == EXPECTED_BODY
    assert submit.model_id == MODEL
    assert emulator.state.count("status") == 1  # checked once before deferring
    submitted_at = store.values[STATE_KEY]["submitted_at"]
    assert before <= submitted_at <= time.time()
    assert store.values[STATE_KEY] == {
        "request_id": request_id,
        "model_id": MODEL,
        "input_sha256": input_fingerprint(MODEL, EXPECTED_BODY),
        "submitted_at": submitted_at,
    }
    assert store.retentions[STATE_KEY] == MIN_RETENTION

    trigger = deferred.value.trigger
    assert isinstance(trigger, SeedanceRequestTrigger)
    kwargs = trigger.serialize()[1]
    assert kwargs["request_id"] == request_id
    assert kwargs["seedance_conn_id"] == "seedance_default"
    assert kwargs["poll_interval"] == 0.05
    assert before + 600 <= kwargs["end_time"] <= time.time() + 600
    # The operator owns the request it paid for: killing the deferred task cancels it (if still queued).
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["submitted_at"] == submitted_at
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"model_id": MODEL, "request_id": request_id, "stored": True}
    assert 600 < deferred.value.timeout.total_seconds() <= 600 + DEFER_TIMEOUT_GRACE_SECONDS


def test_finishes_without_deferring_when_already_done(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(INSTANT)
    store = FakeTaskStateStore()
    ti = FakeTaskInstance()
    result = i2v(deferrable=True).execute(make_context(ti, store))

    request_id = ti.xcom_values["request_id"]
    hook = SeedanceHook()
    api_result = hook.get_result(request_id, include_cost=True).model_dump(mode="json")
    hook.close()
    assert result == expected_result(request_id, api_result)
    # The stored id is dropped once the task succeeded: a cleared task generates a new video.
    assert store.deleted == [STATE_KEY]
    assert STATE_KEY not in store.values


# -- execute_complete --------------------------------------------------------------------------------------


def _event(status: str, request_id: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "request_id": request_id, "result": None, "message": "", **extra}


def test_execute_complete_success_returns_the_spec_dict(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit_directly(emulator, INSTANT)
    wait_for(lambda: request_state(request_id) is RequestStatus.COMPLETED)
    hook = SeedanceHook()
    api_result = hook.get_result(request_id, include_cost=True).model_dump(mode="json")
    hook.close()
    store = FakeTaskStateStore(values={STATE_KEY: {"request_id": request_id}})

    result = i2v().execute_complete(
        make_context(store=store),
        event=_event("succeeded", request_id, result=api_result),
        model_id=MODEL,
        request_id=request_id,
    )
    assert result == expected_result(request_id, api_result)
    assert json.loads(json.dumps(result)) == result
    assert store.deleted == [STATE_KEY]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("failed", "Seedance request R failed: content policy violation"),
        ("cancelled", "Seedance request R was cancelled."),
        ("error", "Seedance request R could not be followed: HTTP 401"),
    ],
)
def test_execute_complete_failure_events_fail_with_the_api_text(status: str, message: str) -> None:
    store = FakeTaskStateStore()
    with pytest.raises(SeedanceRequestFailedError) as err:
        i2v().execute_complete(
            make_context(store=store),
            event=_event(status, "R", message=message),
            model_id=MODEL,
            request_id="R",
        )
    assert str(err.value) == message
    assert (err.value.request_id, err.value.status) == ("R", status)
    assert not isinstance(err.value, SeedanceTimeoutError)
    assert store.deleted == []


def test_execute_complete_timeout_cancels_a_queued_request(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit_directly(emulator, STUCK)
    with pytest.raises(SeedanceTimeoutError) as err:
        i2v().execute_complete(
            make_context(store=FakeTaskStateStore()),
            event=_event("timeout", request_id, message=f"Seedance request {request_id} did not finish."),
            model_id=MODEL,
            request_id=request_id,
        )
    assert "has been cancelled" in str(err.value)
    assert "timeout" in str(err.value)
    assert emulator.state.count("cancel") == 1
    assert request_state(request_id) is RequestStatus.CANCELLED


def test_execute_complete_timeout_of_a_running_request_says_it_goes_on(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit_directly(emulator, JobPlan(queue_seconds=0, run_seconds=60, outcome="stuck_running"))
    wait_for(lambda: request_state(request_id) is RequestStatus.IN_PROGRESS)
    with pytest.raises(SeedanceTimeoutError, match="could not be cancelled"):
        i2v().execute_complete(
            make_context(store=FakeTaskStateStore()),
            event=_event("timeout", request_id),
            model_id=MODEL,
            request_id=request_id,
        )


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"status": "succeeded"},
        {"status": "weird", "request_id": "R"},
        {"status": "succeeded", "request_id": "R", "result": None, "message": "", "extra": 1},
        "succeeded",
    ],
)
def test_execute_complete_rejects_malformed_events(event: Any) -> None:
    with pytest.raises(SeedanceError, match="malformed Seedance trigger event"):
        i2v().execute_complete(make_context(), event=event, model_id=MODEL, request_id="R")


def test_execute_complete_rejects_an_event_for_another_request() -> None:
    with pytest.raises(SeedanceError, match="refusing to use it"):
        i2v().execute_complete(
            make_context(), event=_event("succeeded", "OTHER"), model_id=MODEL, request_id="R"
        )


def test_execute_complete_without_kwargs_uses_this_tries_xcom() -> None:
    ti = FakeTaskInstance(xcom_values={"request_id": "R"})
    with pytest.raises(SeedanceError, match="refusing to use it"):
        i2v().execute_complete(make_context(ti), event=_event("succeeded", "OTHER"))


def test_succeeded_event_without_result_fails() -> None:
    with pytest.raises(SeedanceRequestFailedError, match="without its result"):
        i2v().execute_complete(make_context(), event=_event("succeeded", "R"), model_id=MODEL, request_id="R")


# -- sync (worker) mode ------------------------------------------------------------------------------------


def test_sync_mode_polls_to_success(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    # Long enough for several polls even when a loaded machine stalls the worker for a while.
    emulator.set_plan(JobPlan(queue_seconds=1.0, run_seconds=1.0))
    ti = FakeTaskInstance()
    result = i2v(deferrable=False).execute(make_context(ti, FakeTaskStateStore()))
    assert result["status"] == "succeeded"
    assert result["request_id"] == ti.xcom_values["request_id"]
    assert result["video_url"].startswith(f"{emulator.base_url}/files/")
    assert emulator.state.count("submit") == 1
    assert emulator.state.count("status") >= 3
    assert emulator.state.count("result") == 1


@pytest.mark.parametrize(
    "cost", [float("nan"), float("inf"), -1.0, "free"], ids=["nan", "inf", "negative", "word"]
)
def test_sync_mode_an_odd_cost_is_none_and_the_return_value_is_strict_json(
    emulator: SeedanceEmulator, seedance_conn: str, cost: Any
) -> None:
    # The video exists and was paid for: an odd informational value must neither fail the task nor put a
    # NaN into the XCom (not JSON: Airflow's API server and a Postgres JSON column refuse it).
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0.1))
    emulator.add_fault(
        Fault(
            kind="payload_with_error",
            endpoint="result",
            body={"cost": cost, "metrics": {"fps": float("nan")}},
        )
    )
    result = i2v(deferrable=False).execute(make_context(FakeTaskInstance(), FakeTaskStateStore()))
    assert result["status"] == "succeeded"
    assert result["cost"] is None
    json.dumps(result, allow_nan=False)
    assert emulator.state.count("result") == 1


def test_sync_mode_failure_carries_the_api_error(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0.1, outcome="fail", error="out of GPU memory"))
    with pytest.raises(SeedanceRequestFailedError, match="failed: out of GPU memory") as err:
        i2v(deferrable=False).execute(make_context(store=FakeTaskStateStore()))
    assert err.value.status == "failed"


def test_sync_mode_deadline_cancels_the_queued_request(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    ti = FakeTaskInstance()
    started = time.monotonic()
    with pytest.raises(SeedanceTimeoutError, match="has been cancelled"):
        i2v(deferrable=False, timeout=0.5, poll_interval=0.1).execute(make_context(ti, FakeTaskStateStore()))
    assert 0.5 <= time.monotonic() - started < 5
    assert emulator.state.count("cancel") == 1
    assert request_state(ti.xcom_values["request_id"]) is RequestStatus.CANCELLED


def test_sync_mode_on_kill_cancels_the_request(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    op = i2v(deferrable=False, timeout=30)
    ti = FakeTaskInstance()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(make_context(ti, FakeTaskStateStore()))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: emulator.state.count("status") >= 2)
    op.on_kill()
    worker.join(10)

    assert emulator.state.count("cancel") == 1
    assert request_state(ti.xcom_values["request_id"]) is RequestStatus.CANCELLED
    # The poll loop then sees the cancellation and fails the task.
    [error] = errors
    assert isinstance(error, SeedanceRequestFailedError)
    assert error.status == "cancelled"


def test_on_kill_cancels_without_looking_the_connection_up_again(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on_kill runs in a signal handler: it cancels on a client of its own, with the connection the task
    # already resolved (a lookup there could hang on a secrets backend, or fail as here).
    emulator.set_plan(STUCK)
    op = i2v(deferrable=False, timeout=30, wait_for_completion=False)
    request_id = op.execute(make_context(FakeTaskInstance(), FakeTaskStateStore()))["request_id"]
    op._request_id = request_id  # as while the worker polls it
    client = op.hook.client
    with monkeypatch.context() as patch:
        patch.delenv("AIRFLOW_CONN_SEEDANCE_DEFAULT")
        op.on_kill()

    assert emulator.state.count("cancel") == 1
    assert request_state(request_id) is RequestStatus.CANCELLED
    assert not client.is_closed  # the interrupted call's client is left alone


def test_on_kill_without_a_request_does_nothing(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    i2v().on_kill()
    assert emulator.state.requests() == []


# -- wait_for_completion=False ---------------------------------------------------------------------------


def test_no_wait_returns_right_after_submit(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    ti = FakeTaskInstance()
    store = FakeTaskStateStore()
    result = i2v(wait_for_completion=False).execute(make_context(ti, store))
    assert result == {"request_id": ti.xcom_values["request_id"], "model_id": MODEL, "status": "submitted"}
    assert emulator.state.count("submit") == 1
    assert emulator.state.count("status") == 0
    assert store.deleted == [STATE_KEY]


# -- durability: a new try never pays twice ----------------------------------------------------------------


def stored(request_id: str, body: dict[str, Any] | None = None, model_id: str = MODEL) -> FakeTaskStateStore:
    body = EXPECTED_BODY if body is None else body
    return FakeTaskStateStore(
        values={
            STATE_KEY: {
                "request_id": request_id,
                "model_id": model_id,
                "input_sha256": input_fingerprint(model_id, body),
            }
        }
    )


def test_retry_reattaches_to_a_queued_request(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    request_id = submit_directly(emulator, STUCK)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(ti, stored(request_id)))
    assert emulator.state.count("submit") == 1  # only the earlier try's
    assert deferred.value.trigger.request_id == request_id
    assert ti.xcom_values["request_id"] == request_id
    assert len(logs.lines(f"Re-attaching to Seedance request {request_id}")) == 1


def test_retry_in_sync_mode_reattaches_and_polls(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit_directly(emulator, JobPlan(queue_seconds=0.3, run_seconds=0.2))
    result = i2v(deferrable=False).execute(make_context(store=stored(request_id)))
    assert result["request_id"] == request_id
    assert emulator.state.count("submit") == 1


def test_retry_returns_the_result_of_a_succeeded_request(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit_directly(emulator, INSTANT)
    wait_for(lambda: request_state(request_id) is RequestStatus.COMPLETED)
    store = stored(request_id)
    result = i2v().execute(make_context(store=store))
    assert result["request_id"] == request_id
    assert result["status"] == "succeeded"
    assert emulator.state.count("submit") == 1
    assert store.deleted == [STATE_KEY]


@pytest.mark.parametrize("outcome", ["failed", "cancelled", "expired"])
def test_retry_submits_again_when_the_earlier_request_is_over(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, outcome: str
) -> None:
    if outcome == "failed":
        old = submit_directly(emulator, JobPlan(queue_seconds=0, run_seconds=0, outcome="fail", error="boom"))
        wait_for(lambda: request_state(old) is not RequestStatus.IN_PROGRESS)
    elif outcome == "cancelled":
        old = submit_directly(emulator, STUCK)
        hook = SeedanceHook()
        hook.cancel(old)
        hook.close()
    else:
        old = "expired-request-id"
    emulator.set_plan(STUCK)
    store = stored(old)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(ti, store))

    new = ti.xcom_values["request_id"]
    assert new != old
    assert deferred.value.trigger.request_id == new
    assert store.values[STATE_KEY]["request_id"] == new
    expected_submits = 1 if outcome == "expired" else 2
    assert emulator.state.count("submit") == expected_submits
    why = {"failed": "ended failed", "cancelled": "ended cancelled", "expired": "no longer known"}[outcome]
    assert len(logs.lines(why)) == 1


def test_retry_with_a_changed_input_submits_the_new_input(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    old = submit_directly(emulator, STUCK)
    store = stored(old)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred):
        i2v(duration=8).execute(make_context(ti, store))
    assert ti.xcom_values["request_id"] != old
    assert emulator.state.count("submit") == 2
    assert emulator.state.requests("submit")[-1].body["duration"] == 8


def test_retry_does_not_submit_while_the_earlier_request_cannot_be_read(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    old = submit_directly(emulator, STUCK)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=None))
    with pytest.raises(SeedanceError, match="Not submitting a second, paid request"):
        i2v().execute(make_context(store=stored(old)))
    assert emulator.state.count("submit") == 1


def test_unreadable_store_fails_before_submitting(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    with pytest.raises(SeedanceError, match="so as not to pay twice"):
        i2v().execute(make_context(store=FakeTaskStateStore(fail_get=True)))
    assert emulator.state.requests() == []


def test_unwritable_store_does_not_fail_a_paid_request(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    emulator.set_plan(STUCK)
    with pytest.raises(TaskDeferred):
        i2v().execute(make_context(store=FakeTaskStateStore(fail_set=True)))
    assert emulator.state.count("submit") == 1
    assert len(logs.lines("Could not store Seedance request id")) == 1


def test_durable_false_ignores_the_store(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    old = submit_directly(emulator, STUCK)
    store = stored(old)
    with pytest.raises(TaskDeferred):
        i2v(durable=False).execute(make_context(store=store))
    assert emulator.state.count("submit") == 2
    assert store.values[STATE_KEY]["request_id"] == old


def test_garbage_in_the_store_counts_as_nothing_stored(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    store = FakeTaskStateStore(values={STATE_KEY: {"request_id": "../../etc", "model_id": MODEL}})
    with pytest.raises(TaskDeferred):
        i2v().execute(make_context(store=store))
    assert emulator.state.count("submit") == 1
