"""SeedanceRequestTrigger against the emulator over real HTTP: every end event, faults, on_kill, scale."""

from __future__ import annotations

import asyncio
import json
import math
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_seedance import lifecycle
from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceInputError
from airflow_provider_seedance.hooks.seedance import ASYNC_MAX_CONNECTIONS, SeedanceHook
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    RequestStatus,
    SeedanceTriggerEvent,
)
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import conn_json
from tests.operators._dag_support import CapturedLogs, submit_request

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
PAYLOAD = {"prompt": "A kite over the dunes", "first_frame_image_url": "https://example.com/kite.png"}
CLASSPATH = "airflow_provider_seedance.triggers.seedance.SeedanceRequestTrigger"
POLL = 0.05


def submit(emulator: SeedanceEmulator, plan: JobPlan | None = None) -> str:
    return submit_request(emulator, PAYLOAD, plan, MODEL)


def trigger_for(
    request_id: str, seconds: float = 15.0, poll: float = POLL, **kwargs: Any
) -> SeedanceRequestTrigger:
    return SeedanceRequestTrigger(
        request_id=request_id, poll_interval=poll, end_time=time.time() + seconds, **kwargs
    )


async def first_event(trigger: SeedanceRequestTrigger, limit: float = 20.0) -> dict[str, Any]:
    event = await asyncio.wait_for(trigger.run().__anext__(), timeout=limit)
    payload = event.payload
    # The payload is stored in the metadata DB: it must be plain JSON and a valid event of our schema.
    assert json.loads(json.dumps(payload)) == payload
    SeedanceTriggerEvent.parse(payload, expected_request_id=trigger.request_id)
    return payload


# -- construction and serialisation ----------------------------------------------------------------------


def test_serialize_returns_only_ids_and_timings_and_round_trips() -> None:
    trigger = SeedanceRequestTrigger(
        "req_123-abc",
        "my_conn",
        poll_interval=2.5,
        end_time=1_800_000_000.5,
        cancel_on_kill=True,
        submitted_at=1_799_999_000.25,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "request_id": "req_123-abc",
        "seedance_conn_id": "my_conn",
        "poll_interval": 2.5,
        "end_time": 1_800_000_000.5,
        "cancel_on_kill": True,
        "submitted_at": 1_799_999_000.25,
    }
    rebuilt = SeedanceRequestTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    # The hook (and with it the connection and token) is only built inside run().
    assert "hook" not in trigger.__dict__
    assert "hook" not in rebuilt.__dict__


def test_serialize_without_deadline() -> None:
    assert SeedanceRequestTrigger("abc").serialize()[1] == {
        "request_id": "abc",
        "seedance_conn_id": "seedance_default",
        "poll_interval": 10.0,
        "end_time": None,
        "cancel_on_kill": False,
        "submitted_at": None,
    }


def test_kwargs_serialised_by_an_earlier_version_still_rebuild() -> None:
    # A triggerer upgraded while tasks are deferred rebuilds triggers from the kwargs stored before.
    old = {"request_id": "abc", "seedance_conn_id": "c", "poll_interval": 5.0, "end_time": 1_800_000_000.0}
    trigger = SeedanceRequestTrigger(**old)
    # The safe reading of a kwargs row that does not say who owns the request: cancel nothing.
    assert trigger.cancel_on_kill is False
    assert trigger.submitted_at is None
    assert trigger.serialize()[1] == {**old, "cancel_on_kill": False, "submitted_at": None}


@pytest.mark.parametrize("cancel_on_kill", [1, "yes", None])
def test_rejects_non_bool_cancel_on_kill(cancel_on_kill: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="cancel_on_kill"):
        SeedanceRequestTrigger(request_id="abc", cancel_on_kill=cancel_on_kill)


@pytest.mark.parametrize("submitted_at", [float("nan"), float("inf"), "now", True])
def test_rejects_bad_submitted_at(submitted_at: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="submitted_at"):
        SeedanceRequestTrigger(request_id="abc", submitted_at=submitted_at)


@pytest.mark.parametrize("request_id", ["", "has space", "../etc", "x" * 129, None, 42])
def test_rejects_malformed_request_id(request_id: Any) -> None:
    with pytest.raises(SeedanceInputError, match="request_id"):
        SeedanceRequestTrigger(request_id=request_id)


@pytest.mark.parametrize("poll_interval", [0, -1, float("nan"), float("inf"), True, "10", 1e12])
def test_rejects_bad_poll_interval(poll_interval: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="poll_interval"):
        SeedanceRequestTrigger(request_id="abc", poll_interval=poll_interval)


@pytest.mark.parametrize("end_time", [float("nan"), "tomorrow", False])
def test_rejects_bad_end_time(end_time: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="end_time"):
        SeedanceRequestTrigger(request_id="abc", end_time=end_time)


def test_rejects_empty_conn_id() -> None:
    with pytest.raises(SeedanceConfigurationError, match="seedance_conn_id"):
        SeedanceRequestTrigger(request_id="abc", seedance_conn_id="")


# -- terminal events ---------------------------------------------------------------------------------------


async def test_succeeded_event_carries_the_result(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    # Long enough for two polls even when the trigger is slow to start (see the test below).
    request_id = submit(emulator, JobPlan(queue_seconds=1.0, run_seconds=1.0))
    payload = await first_event(trigger_for(request_id))

    assert payload["status"] == "succeeded"
    assert payload["request_id"] == request_id
    result = payload["result"]
    assert result["status"] == "succeeded"
    assert result["output"]["video"].startswith(f"{emulator.base_url}/files/{request_id}/")
    assert "1 video" in payload["message"]
    # One status GET per poll; the result GET only once, at the end.
    assert emulator.state.count("result") == 1
    assert emulator.state.count("status") >= 2
    assert emulator.state.count("cancel") == 0
    assert emulator.state.count("submit") == 1


@pytest.mark.parametrize("status_style", ["completed", "failed"])
@pytest.mark.parametrize(
    ("error", "expected_text"),
    [
        ("content policy violation: the image shows a real person",) * 2,
        ({"error_message": "GPU worker crashed", "error_code": 500123}, "GPU worker crashed (code 500123)"),
    ],
)
async def test_failed_event_carries_the_api_error(
    emulator: SeedanceEmulator, seedance_conn: str, status_style: str, error: Any, expected_text: str
) -> None:
    plan = JobPlan(
        queue_seconds=0.05,
        run_seconds=0.1,
        outcome="fail",
        error=error,
        failed_status_on_status_endpoint=status_style,
    )
    request_id = submit(emulator, plan)
    payload = await first_event(trigger_for(request_id))

    assert payload["status"] == "failed"
    assert payload["message"] == f"Seedance request {request_id} failed: {expected_text}"
    assert payload["result"]["status"] == "failed"
    assert emulator.state.count("result") == 1


async def test_cancelled_event(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    hook = SeedanceHook()
    assert hook.cancel(request_id).cancelled
    hook.close()

    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "cancelled"
    assert payload["message"].startswith(f"Seedance request {request_id} was cancelled")


async def test_timeout_event_at_the_deadline_and_nothing_cancelled(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0.05, run_seconds=60, outcome="stuck_running"))
    started = time.monotonic()
    payload = await first_event(trigger_for(request_id, seconds=0.6, poll=0.1))
    elapsed = time.monotonic() - started

    assert payload["status"] == "timeout"
    assert payload["result"] is None
    assert "did not finish before its deadline" in payload["message"]
    assert "in_progress" in payload["message"]
    assert 0.5 <= elapsed < 3.0
    # The trigger only reads: cancelling on timeout is the operator's decision.
    assert emulator.state.count("cancel") == 0
    assert emulator.state.count("result") == 0


async def test_deadline_already_passed_still_reads_once(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0))
    await asyncio.sleep(0.2)
    payload = await first_event(trigger_for(request_id, seconds=-5))
    # A request that finished while nobody watched is not reported as timed out.
    assert payload["status"] == "succeeded"


async def test_error_event_for_unknown_request(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    payload = await first_event(trigger_for("no-such-request"))
    assert payload["status"] == "error"
    assert "was not found by the API" in payload["message"]
    # A permanent error is not retried.
    assert emulator.state.count("status") == 1


async def test_error_event_for_rejected_token(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = conn_json(emulator)
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", good)
    request_id = submit(emulator)
    bad = json.loads(good)
    bad["password"] = "sk-revoked-token"
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", json.dumps(bad))

    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "error"
    assert "HTTP 401" in payload["message"]
    assert "sk-revoked-token" not in json.dumps(payload)
    assert emulator.state.count("status") == 1


async def test_unknown_status_is_an_error_not_a_success(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0))
    emulator.add_fault(Fault(kind="unknown_status", endpoint="status", times=None))
    emulator.add_fault(Fault(kind="unknown_status", endpoint="result", times=None))

    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "error"
    assert "status this provider does not know" in payload["message"]


async def test_succeeded_without_video(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0.05, num_videos=0))
    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "succeeded"
    assert "holds no video URL" in payload["message"]


async def test_another_requests_result_is_never_reported(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    # A proxy or cache answering with another request's result: that video must never become this one's.
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0))
    emulator.add_fault(
        Fault(
            kind="payload_with_error",
            endpoint="result",
            body={"request_id": "someone-elses-request"},
            times=None,
        )
    )
    payload = await first_event(trigger_for(request_id, seconds=1.5, poll=0.1))

    assert payload["status"] == "timeout"
    assert payload["result"] is None
    assert "someone-elses-request" not in json.dumps(payload)
    assert logs.lines("'someone-elses-request'; another request's answer is never used")


async def test_non_json_numbers_in_the_result_never_reach_the_event(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0))
    emulator.add_fault(
        Fault(kind="payload_with_error", endpoint="result", body={"cost": math.nan, "progress": math.inf})
    )
    payload = await first_event(trigger_for(request_id))

    assert payload["status"] == "succeeded"
    assert payload["result"]["cost"] is None
    assert payload["result"]["progress"] is None
    json.dumps(payload, allow_nan=False)  # the event is stored as JSON: no NaN or infinity may be left


# -- "not found" right after the submit, and right after the end ---------------------------------------------


async def test_not_found_right_after_submit_is_read_after_write_lag(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    submitted_at = time.time()
    # A lag long enough for several 0.05 s polls even when a loaded machine starts the trigger late.
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0.1, not_found_seconds=1.5))
    payload = await first_event(trigger_for(request_id, submitted_at=submitted_at))

    assert payload["status"] == "succeeded"
    lagged = [r for r in emulator.state.requests("status") if r.status_code == 404]
    assert len(lagged) >= 2
    # One warning for the lag, not one per poll.
    assert len(logs.lines("read-after-write lag")) == 1


async def test_not_found_without_a_submit_time_is_gone_at_once(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    # A trigger that does not know when the request was accepted cannot tell lag from gone.
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0.1, not_found_seconds=30))
    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "error"
    assert "was not found by the API" in payload["message"]
    assert emulator.state.count("status") == 1


@pytest.mark.parametrize("clock_ahead", [0, 3600], ids=["same-clock", "submitter-clock-an-hour-ahead"])
async def test_not_found_after_the_grace_is_gone(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch, clock_ahead: int
) -> None:
    # A submit time from a worker whose clock runs ahead counts as "now", not as extra grace. The grace is
    # long enough for a loaded machine's first poll to fall inside it, so the lag is seen before "gone".
    monkeypatch.setattr(lifecycle, "NOT_FOUND_GRACE_SECONDS", 1.0)
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0.1, not_found_seconds=30))
    started = time.monotonic()
    payload = await first_event(trigger_for(request_id, submitted_at=time.time() + clock_ahead), limit=10)

    assert payload["status"] == "error"
    assert "was not found by the API" in payload["message"]
    assert 1.0 <= time.monotonic() - started < 10  # the patched grace, not the default 120 s nor an hour
    assert emulator.state.count("status") >= 2  # a 404 taken as lag, then one past the grace


async def test_not_found_on_the_result_just_after_the_end_is_lag(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    # No submit time known (the sensor's case): the grace after "completed" still covers the result read.
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=0.05))
    emulator.add_fault(
        Fault(kind="http_error", endpoint="result", status_code=404, error_code=404001, times=2)
    )
    payload = await first_event(trigger_for(request_id))
    assert payload["status"] == "succeeded"
    assert emulator.state.count("result") == 3


# -- transient faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="http_error", endpoint="status", status_code=429, retry_after=1, times=1),
        Fault(kind="http_error", endpoint="status", status_code=503, times=2),
        Fault(kind="http_error", endpoint="result", status_code=502, times=2),
        Fault(kind="drop", endpoint="status", times=2),
        Fault(kind="malformed_json", endpoint="status", times=2),
        Fault(kind="malformed_json", endpoint="result", times=1),
    ],
    ids=["429-retry-after", "503", "result-502", "drop", "malformed-json", "result-malformed-json"],
)
async def test_transient_faults_are_survived(
    emulator: SeedanceEmulator, seedance_conn: str, fault: Fault
) -> None:
    request_id = submit(emulator)
    emulator.add_fault(fault)
    started = time.monotonic()
    payload = await first_event(trigger_for(request_id))

    assert payload["status"] == "succeeded"
    faulted = [r for r in emulator.state.requests(fault.endpoint) if r.fault]
    assert len(faulted) == (fault.times or 0)
    if fault.retry_after:
        assert time.monotonic() - started >= fault.retry_after


async def test_outage_longer_than_the_hook_retries_keeps_polling(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    request_id = submit(emulator)
    # conn_json allows 3 retries: 4 attempts per call. 9 failures outlast two whole calls.
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=9))
    payload = await first_event(trigger_for(request_id))

    assert payload["status"] == "succeeded"
    assert emulator.state.count("status") >= 10
    assert len(logs.lines("trying again at the next poll")) == 2


# -- logging -----------------------------------------------------------------------------------------------


async def test_logs_state_changes_not_every_poll(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    # Phases long enough to outlast the trigger's start (its first connection lookup on Airflow 3.0
    # builds the ORM mappers: seconds on a loaded machine).
    emulator.set_plan(JobPlan(queue_seconds=2.0, run_seconds=1.0, initial_queue_position=1))
    request_id = submit(emulator)
    logs.structlog_lines.clear()
    payload = await first_event(trigger_for(request_id, poll=0.02))
    assert payload["status"] == "succeeded"

    mine = logs.lines(request_id)
    assert sum("is generating" in line for line in mine) == 1
    assert sum("is queued at position 1" in line for line in mine) == 1
    assert sum("reading its result" in line for line in mine) == 1
    assert emulator.state.count("status") > 10
    assert len(mine) == 4  # queued, generating, finished, the outcome


# -- on_kill -----------------------------------------------------------------------------------------------


async def test_on_kill_cancels_a_queued_request(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    trigger = trigger_for(request_id, cancel_on_kill=True)
    run = asyncio.ensure_future(trigger.run().__anext__())
    await asyncio.sleep(0.2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    await trigger.on_kill()
    assert emulator.state.count("cancel") == 1
    hook = SeedanceHook()
    assert hook.get_status(request_id).state is RequestStatus.CANCELLED
    hook.close()


async def test_on_kill_cancels_when_airflow_cannot_say_the_task_is_still_deferred(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    # Out of a triggerer there is no supervisor to ask for the task's state: a kill is taken as a user's
    # (the documented promise), and the failed lookup is logged.
    request_id = submit(emulator, JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    trigger = trigger_for(request_id, cancel_on_kill=True)
    trigger.task_instance = SimpleNamespace(  # type: ignore[assignment]
        dag_id="gen", run_id="manual__1", task_id="generate", map_index=2
    )
    await trigger.on_kill()
    assert emulator.state.count("cancel") == 1
    assert len(logs.lines("Could not read the state of the task")) == 1


async def test_on_kill_of_a_running_request_is_logged_not_raised(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=0, run_seconds=60, outcome="stuck_running"))
    await asyncio.sleep(0.1)
    await trigger_for(request_id, cancel_on_kill=True).on_kill()
    assert emulator.state.count("cancel") == 1
    assert len(logs.lines("could not be cancelled")) == 1


async def test_on_kill_survives_an_api_outage(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    request_id = submit(emulator, JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    emulator.add_fault(Fault(kind="http_error", endpoint="cancel", status_code=503, times=None))
    await trigger_for(request_id, cancel_on_kill=True).on_kill()
    assert len(logs.lines(f"Could not cancel Seedance request {request_id}")) == 1
    assert emulator.state.count("cancel") == 4  # the hook retried it


@pytest.mark.parametrize("kwargs", [{}, {"cancel_on_kill": False}], ids=["default", "explicit"])
async def test_on_kill_without_cancel_on_kill_leaves_the_request_alone(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, kwargs: dict[str, Any]
) -> None:
    # The sensor's trigger (and a direct user's, by default): the request belongs to someone else.
    request_id = submit(emulator, JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue"))
    await trigger_for(request_id, **kwargs).on_kill()
    assert emulator.state.count("cancel") == 0
    hook = SeedanceHook()
    assert hook.get_status(request_id).state is RequestStatus.IN_QUEUE
    hook.close()
    assert len(logs.lines(f"leaving Seedance request {request_id} alone")) == 1


# -- scale -------------------------------------------------------------------------------------------------


async def test_many_triggers_share_one_loop_without_blocking_it(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    hook = SeedanceHook()
    request_ids = [hook.submit(MODEL, PAYLOAD).request_id for _ in range(40)]
    hook.close()
    # Every status answer is held 3 s. Triggers that share the loop wait for theirs together; one that
    # blocked the loop for its call would hold every other trigger (and this watcher) that long, and the
    # server would never hold more than one status call at a time.
    emulator.add_fault(Fault(kind="slow", endpoint="status", delay_seconds=3.0, times=None))

    gaps: list[float] = []
    most_held = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal most_held
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            held = sum(call.endpoint == "status" and call.status_code is None for call in emulator.requests())
            most_held = max(most_held, held)

    watcher = asyncio.ensure_future(watch())
    payloads = await asyncio.gather(
        *(first_event(trigger_for(rid, seconds=120, poll=0.05), limit=90) for rid in request_ids)
    )
    stop.set()
    await watcher

    assert [p["status"] for p in payloads] == ["succeeded"] * 40
    assert [p["request_id"] for p in payloads] == request_ids
    # Every pooled connection was busy at once, and the loop kept turning while they waited: a stall is
    # a blocking call (3 s here), never a loaded machine's hiccup (well under 2 s).
    assert most_held == ASYNC_MAX_CONNECTIONS
    assert max(gaps) < 2.0
