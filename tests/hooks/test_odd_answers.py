"""Odd answers the emulator gives only when told, over real HTTP: another request's, odd extras, NaN."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceAuthenticationError,
    SeedanceMalformedResponseError,
)
from airflow_provider_seedance.hooks._responses import SECRET_MASK, interpret_response, read_json
from airflow_provider_seedance.hooks.seedance import SeedanceHook, aclose_shared_clients
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID, RequestStatus, ResultResponse
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import TEST_TOKEN, conn_json

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
PAYLOAD = {"prompt": "A paper boat on a gutter stream", "first_frame_image_url": "https://example.com/b.png"}
OTHER = "someone-elses-request-7f3a"
QUEUED = JobPlan(queue_seconds=30, run_seconds=1)
ATTEMPTS = 4  # conn_json allows 3 retries


def foreign(endpoint: str, times: int | None = None) -> Fault:
    """An answer that keeps its shape but names another request (a proxy or cache mixing answers up)."""
    return Fault(kind="payload_with_error", endpoint=endpoint, body={"request_id": OTHER}, times=times)


def async_error(call: Callable[[], Awaitable[object]]) -> BaseException:
    """Run an async hook call in a fresh event loop and return what it raised (it must raise)."""

    async def go() -> BaseException:
        try:
            await call()
        except BaseException as exc:
            return exc
        finally:
            await aclose_shared_clients()
        raise AssertionError("the call succeeded")

    return asyncio.run(go())


def queued(emulator: SeedanceEmulator, hook: SeedanceHook) -> str:
    """Submit a request that stays queued for the test's whole length; return its id."""
    emulator.set_plan(QUEUED)
    return hook.submit(MODEL, PAYLOAD).request_id


def finished(emulator: SeedanceEmulator, hook: SeedanceHook) -> str:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    request_id = hook.submit(MODEL, PAYLOAD).request_id
    for _ in range(200):
        if hook.get_status(request_id).state is RequestStatus.COMPLETED:
            return request_id
        time.sleep(0.02)
    raise AssertionError("the emulator never finished the request")


# -- another request's answer is never used ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
def test_an_answer_about_another_request_is_refused_naming_both(
    emulator: SeedanceEmulator, hook: SeedanceHook, endpoint: str
) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(foreign(endpoint))
    call = {"status": hook.get_status, "result": hook.get_result, "cancel": hook.cancel}[endpoint]
    with pytest.raises(SeedanceMalformedResponseError) as raised:
        call(request_id)
    text = str(raised.value)
    assert request_id in text
    assert repr(OTHER) in text
    assert "never used" in text
    assert raised.value.request_id == request_id
    # Malformed, so retried like any garbled answer (it may be a passing mix-up), then given up on.
    assert emulator.state.count(endpoint) == ATTEMPTS


def test_a_passing_mix_up_is_retried_and_the_right_answer_used(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    request_id = finished(emulator, hook)
    emulator.add_fault(foreign("result", times=1))
    result = hook.get_result(request_id)
    assert result.request_id == request_id
    assert result.succeeded
    assert emulator.state.count("result") == 2


def test_another_requests_answer_is_refused_on_the_async_side(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    request_id = finished(emulator, hook)
    emulator.add_fault(foreign("result"))

    caught = async_error(lambda: hook.aget_result(request_id))
    assert isinstance(caught, SeedanceMalformedResponseError)
    assert repr(OTHER) in str(caught)


def test_a_catalog_answer_about_another_model_is_refused(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    other = "bytedance/seedance-1-0/lite/image-to-video"
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="model", body={"model_id": other}))
    assert hook.get_model(MODEL).model_id == MODEL  # one mix-up, then the right answer
    emulator.add_fault(
        Fault(kind="payload_with_error", endpoint="model", body={"model_id": other}, times=None)
    )
    with pytest.raises(SeedanceMalformedResponseError, match=f"is about model {other!r}"):
        hook.get_model(MODEL)
    caught = async_error(lambda: hook.aget_model(MODEL))
    assert isinstance(caught, SeedanceMalformedResponseError)
    assert f"for model {MODEL} is about model {other!r}" in str(caught)
    # The same id written with a leading or trailing slash is the same model.
    emulator.state.clear_faults()
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="model", body={"model_id": f"/{MODEL}/"}))
    assert hook.get_model(MODEL).base_price_usd is not None


def test_an_answer_naming_no_request_is_still_accepted(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    # The contract lists request_id in every answer, but an answer without it names nobody else.
    request_id = queued(emulator, hook)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="status", body={"request_id": None}))
    assert hook.get_status(request_id).state is RequestStatus.IN_QUEUE
    assert emulator.state.count("status") == 1


# -- fields that only inform never fail a poll -------------------------------------------------------------


@pytest.mark.parametrize("position", ["n/a", 2.5, -1, True, {"n": 3}, [3]])
def test_an_odd_queue_position_does_not_fail_the_poll(
    emulator: SeedanceEmulator, hook: SeedanceHook, position: Any
) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="status", body={"queue_position": position}))
    status = hook.get_status(request_id)
    assert status.state is RequestStatus.IN_QUEUE
    assert status.queue_position is None
    assert emulator.state.count("status") == 1  # accepted at once, not retried as garbled


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        (-0.5, None),
        ("free", None),
        ({"usd": 0.3}, None),
        ("0.25", 0.25),
        (0, 0.0),
        (1.5, 1.5),
    ],
    ids=["nan", "inf", "-inf", "negative", "word", "object", "numeric-text", "zero", "number"],
)
def test_an_odd_cost_does_not_fail_a_paid_result(
    emulator: SeedanceEmulator, hook: SeedanceHook, cost: Any, expected: float | None
) -> None:
    request_id = finished(emulator, hook)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="result", body={"cost": cost}))
    result = hook.get_result(request_id, include_cost=True)
    assert result.succeeded
    assert result.cost == expected
    assert emulator.state.count("result") == 1


def test_a_status_answer_with_code_zero_is_a_success(emulator: SeedanceEmulator, hook: SeedanceHook) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="status", body={"code": 0, "message": "ok"}))
    assert hook.get_status(request_id).state is RequestStatus.IN_QUEUE
    # ... while a real error code beside a normal answer is still an error.
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="status", error_code=404001, times=None))
    with pytest.raises(Exception, match="404001"):
        hook.get_status(request_id)


# -- numbers JSON does not have ------------------------------------------------------------------------------


def test_non_json_numbers_anywhere_in_a_result_are_read_as_null(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    # Python's json would read these as floats that Airflow cannot store (XCom, trigger events, the DB).
    request_id = finished(emulator, hook)
    emulator.add_fault(
        Fault(
            kind="payload_with_error",
            endpoint="result",
            body={"progress": math.nan, "metrics": {"fps": math.inf, "score": [1.0, -math.inf]}},
        )
    )
    result = hook.get_result(request_id)
    dumped = result.model_dump(mode="python")
    assert dumped["progress"] is None
    assert dumped["metrics"] == {"fps": None, "score": [1.0, None]}
    json.dumps(dumped, allow_nan=False)  # raises on any NaN or infinity left


@pytest.mark.parametrize(
    "text",
    [
        '{"request_id": "r1", "status": "succeeded", "cost": 1e999, "output": {"video": "https://x/v.mp4"}}',
        '{"request_id": "r1", "status": "succeeded", "cost": -Infinity, "output": {"video": "https://x/v.mp4"}}',
        '{"request_id": "r1", "status": "succeeded", "cost": NaN, "output": {"video": "https://x/v.mp4"}}',
    ],
    ids=["overflow", "-infinity", "nan"],
)
def test_read_json_turns_every_non_finite_spelling_into_null(text: str) -> None:
    response = httpx.Response(200, content=text.encode())
    assert read_json(response)["cost"] is None
    body = interpret_response(response, call="result", request_id="r1")
    assert ResultResponse.model_validate(body).cost is None


def test_read_json_keeps_ordinary_numbers_exact() -> None:
    response = httpx.Response(200, content=b'{"a": 0.1, "b": 12345678901234567890, "c": -2.5e-3, "d": 7}')
    assert read_json(response) == {"a": 0.1, "b": 12345678901234567890, "c": -2.5e-3, "d": 7}


# -- a redirect from the API is never followed --------------------------------------------------------------


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A listening socket that records whether anyone connected (a redirect target must stay unvisited)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


def visited(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def trap_url(listener: socket.socket) -> str:
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["submit", "status", "result", "cancel"])
def test_a_redirect_is_never_followed_and_says_where_it_pointed(
    emulator: SeedanceEmulator, hook: SeedanceHook, trap: socket.socket, endpoint: str
) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(
        Fault(kind="redirect", endpoint=endpoint, location=f"{trap_url(trap)}/collect?sig=s3cr3t#frag")
    )
    calls: dict[str, Callable[[], object]] = {
        "submit": lambda: hook.submit(MODEL, PAYLOAD),
        "status": lambda: hook.get_status(request_id),
        "result": lambda: hook.get_result(request_id),
        "cancel": lambda: hook.cancel(request_id),
    }
    with pytest.raises(SeedanceAPIError) as raised:
        calls[endpoint]()
    text = str(raised.value)
    assert "HTTP 307" in text
    assert f"{trap_url(trap)}/collect" in text
    assert f"If {trap_url(trap)} is the RunComfy API" in text
    assert "s3cr3t" not in text
    assert "frag" not in text
    assert not raised.value.retryable
    assert not visited(trap)  # the token never went there
    # Asked once: not retried, and a redirected submit created nothing (the first submit is the only job).
    assert emulator.state.count(endpoint) == (2 if endpoint == "submit" else 1)
    assert len(emulator.state.jobs()) == 1


def test_a_redirect_is_never_followed_on_the_async_side(
    emulator: SeedanceEmulator, hook: SeedanceHook, trap: socket.socket
) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(Fault(kind="redirect", endpoint="status", location=f"{trap_url(trap)}/v1/requests"))

    caught = async_error(lambda: hook.aget_status(request_id))
    assert isinstance(caught, SeedanceAPIError)
    assert "redirects are never followed" in str(caught)
    assert not visited(trap)
    assert emulator.state.count("status") == 1


def test_the_connection_test_reports_a_redirect(
    emulator: SeedanceEmulator, hook: SeedanceHook, trap: socket.socket
) -> None:
    emulator.add_fault(Fault(kind="redirect", endpoint="status", location=f"{trap_url(trap)}/"))
    accepted, message = hook.test_connection()
    assert not accepted
    assert f"If {trap_url(trap)} is the RunComfy API" in message
    assert not visited(trap)


# -- an answer that repeats the token -----------------------------------------------------------------------


def test_an_error_repeating_the_token_never_shows_it(emulator: SeedanceEmulator, hook: SeedanceHook) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(
        Fault(
            kind="http_error",
            endpoint="status",
            status_code=401,
            error_code=400004,
            error_message=f"Invalid token {TEST_TOKEN} for this account",
        )
    )
    with pytest.raises(SeedanceAuthenticationError) as raised:
        hook.get_status(request_id)
    text = str(raised.value)
    assert TEST_TOKEN not in text
    assert f"Invalid token {SECRET_MASK} for this account" in text
    assert TEST_TOKEN not in repr(raised.value)


def test_a_body_repeating_the_token_is_masked_everywhere_in_it(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    request_id = queued(emulator, hook)
    echo = {"debug": {"headers": [f"Authorization: Bearer {TEST_TOKEN}"]}, TEST_TOKEN: "as a key"}
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="status", body=echo))
    status = hook.get_status(request_id)
    dumped = json.dumps(status.model_dump())
    assert TEST_TOKEN not in dumped
    assert f"Authorization: Bearer {SECRET_MASK}" in dumped
    assert status.state is RequestStatus.IN_QUEUE  # the rest of the answer is untouched


def test_a_redirect_naming_the_token_never_shows_it(
    emulator: SeedanceEmulator, hook: SeedanceHook, trap: socket.socket
) -> None:
    request_id = queued(emulator, hook)
    emulator.add_fault(Fault(kind="redirect", endpoint="result", location=f"{trap_url(trap)}/k/{TEST_TOKEN}"))
    with pytest.raises(SeedanceAPIError) as raised:
        hook.get_result(request_id)
    assert TEST_TOKEN not in str(raised.value)
    assert f"{trap_url(trap)}/k/{SECRET_MASK}" in str(raised.value)
    assert not visited(trap)


def test_a_failure_reason_repeating_the_token_never_reaches_the_trigger_event(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    emulator.set_plan(
        JobPlan(
            queue_seconds=0, run_seconds=0, outcome="fail", error=f"worker saw header Bearer {TEST_TOKEN}"
        )
    )
    request_id = hook.submit(MODEL, PAYLOAD).request_id

    async def go() -> dict[str, Any]:
        trigger = SeedanceRequestTrigger(request_id=request_id, poll_interval=0.05, end_time=time.time() + 15)
        try:
            event = await asyncio.wait_for(trigger.run().__anext__(), 20)
        finally:
            await aclose_shared_clients()
        return event.payload

    payload = asyncio.run(go())
    assert payload["status"] == "failed"
    assert TEST_TOKEN not in json.dumps(payload)
    assert f"worker saw header Bearer {SECRET_MASK}" in payload["message"]


def test_a_token_too_short_to_mask_leaves_the_answer_alone(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Masking a 4-letter token would rewrite words of the answer ("canc" in "cancelled").
    emulator.state.add_token("canc")
    fields = json.loads(conn_json(emulator))
    fields["password"] = "canc"
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_SHORT", json.dumps(fields))
    short = SeedanceHook("seedance_short")
    try:
        emulator.set_plan(QUEUED)
        request_id = short.submit(MODEL, PAYLOAD).request_id
        assert short.cancel(request_id).cancelled
        assert short.get_status(request_id).status == "cancelled"
    finally:
        short.close()
