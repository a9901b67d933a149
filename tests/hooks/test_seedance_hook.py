"""SeedanceHook against the API emulator over real HTTP on 127.0.0.1: calls, errors, retries, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceAuthenticationError,
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceError,
    SeedanceInputError,
    SeedanceInputRejectedError,
    SeedanceInsufficientBalanceError,
    SeedanceInvalidIdentifierError,
    SeedanceMalformedResponseError,
    SeedanceNotFoundError,
    SeedancePermissionDeniedError,
    SeedanceRateLimitError,
    SeedanceServerError,
    SeedanceSubmissionStateUnknownError,
)
from airflow_provider_seedance.hooks.seedance import (
    ASYNC_MAX_CONNECTIONS,
    DEFAULT_BASE_URL,
    SeedanceHook,
    _AsyncClientPool,
    _shared_async_pool,
    aclose_shared_clients,
    normalize_base_url,
)
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    RequestStatus,
    SeedanceImageToVideoInput,
)
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from tests._support import TEST_TOKEN, conn_json, free_port

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
PAYLOAD = {"prompt": "A lighthouse at dusk", "first_frame_image_url": "https://example.com/l.png"}


def submit_one(hook: SeedanceHook) -> str:
    return hook.submit(MODEL, PAYLOAD).request_id


def wait_until(hook: SeedanceHook, request_id: str, wanted: RequestStatus, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while hook.get_status(request_id).state is not wanted:
        assert time.monotonic() < deadline, f"{request_id} never reached {wanted}"
        time.sleep(0.05)


# -- connection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, DEFAULT_BASE_URL),
        ("", None, DEFAULT_BASE_URL),
        ("model-api.runcomfy.net", None, "https://model-api.runcomfy.net"),
        ("https://model-api.runcomfy.net/", None, "https://model-api.runcomfy.net"),
        ("http://127.0.0.1:8765", None, "http://127.0.0.1:8765"),
        ("127.0.0.1", 8765, "https://127.0.0.1:8765"),
        ("https://proxy.example.com/runcomfy", None, "https://proxy.example.com/runcomfy"),
    ],
)
def test_base_url_normalisation(host: str | None, port: int | None, expected: str) -> None:
    assert normalize_base_url(host, port) == expected


def test_connection_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_DEFAULT",
        json.dumps(
            {"conn_type": "seedance", "password": "tok-json", "extra": {"timeout": 12, "max_retries": 2}}
        ),
    )
    config = SeedanceHook().config
    assert (config.base_url, config.token, config.timeout, config.max_retries) == (
        DEFAULT_BASE_URL,
        "tok-json",
        12.0,
        2,
    )


def test_connection_uri_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MY_SEEDANCE", "seedance://:tok-uri@model-api.runcomfy.net?timeout=7")
    config = SeedanceHook("my_seedance").config
    assert (config.base_url, config.token, config.timeout) == (
        "https://model-api.runcomfy.net",
        "tok-uri",
        7.0,
    )


def test_connection_uri_form_with_http_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMU", "seedance://:tok@http%3A%2F%2F127.0.0.1%3A8765")
    assert SeedanceHook("emu").config.base_url == "http://127.0.0.1:8765"


def test_connection_without_token_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_DEFAULT", json.dumps({"conn_type": "seedance", "host": "x.com"})
    )
    with pytest.raises(SeedanceConfigurationError, match="has no API token"):
        _ = SeedanceHook().config


@pytest.mark.parametrize("extra", [{"timeout": 0}, {"timeout": "soon"}, {"max_retries": -1}])
def test_connection_with_bad_extra_fails_clearly(monkeypatch: pytest.MonkeyPatch, extra: dict) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_DEFAULT",
        json.dumps({"conn_type": "seedance", "password": "t", "extra": extra}),
    )
    with pytest.raises(SeedanceConfigurationError, match=next(iter(extra))):
        _ = SeedanceHook().config


def test_hook_overrides_beat_connection_extras(seedance_conn: str) -> None:
    config = SeedanceHook(seedance_conn, timeout=2, max_retries=0).config
    assert (config.timeout, config.max_retries) == (2.0, 0)


async def test_sync_and_async_lookups_share_one_connection_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def point_at(token: str) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SEEDANCE_DEFAULT", json.dumps({"conn_type": "seedance", "password": token})
        )

    point_at("tok-first")
    sync_first = SeedanceHook()
    resolved = sync_first.config
    point_at("tok-second")  # a second lookup would see this token: none may happen
    assert await sync_first.aget_config() is resolved

    async_first = SeedanceHook()
    resolved = await async_first.aget_config()
    point_at("tok-third")
    assert async_first.config is resolved
    assert resolved.token == "tok-second"


def test_test_connection_accepts_a_good_token(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert "accepted" in message
    assert emulator.state.count("submit") == 0


def test_test_connection_reports_a_bad_token(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BAD",
        json.dumps({"conn_type": "seedance", "host": emulator.base_url, "password": "wrong-token-123"}),
    )
    ok, message = SeedanceHook("bad").test_connection()
    assert not ok
    assert "token" in message.lower()
    assert "wrong-token-123" not in message


def test_test_connection_reports_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOWN",
        json.dumps({"conn_type": "seedance", "host": f"http://127.0.0.1:{free_port()}", "password": "t"}),
    )
    ok, message = SeedanceHook("down").test_connection()
    assert not ok
    assert "ConnectError" in message


# -- the four calls ----------------------------------------------------------------------------------------


def test_submit_status_result_roundtrip(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    submitted = hook.submit(MODEL, SeedanceImageToVideoInput.validate_input(PAYLOAD))
    assert submitted.status_url
    assert submitted.status_url.endswith(f"/v1/requests/{submitted.request_id}/status")
    first = hook.get_status(submitted.request_id)
    assert first.state is RequestStatus.IN_QUEUE
    assert isinstance(first.queue_position, int)
    wait_until(hook, submitted.request_id, RequestStatus.COMPLETED)
    result = hook.get_result(submitted.request_id)
    assert result.state is RequestStatus.SUCCEEDED
    assert result.output
    assert result.output["video"].startswith(emulator.base_url)
    assert result.cost is None
    [record] = emulator.state.requests("submit")
    assert record.body == SeedanceImageToVideoInput.validate_input(PAYLOAD).to_request_body()
    assert record.headers["authorization"] == f"Bearer {TEST_TOKEN}"


def test_result_before_the_end_reports_the_current_state(hook: SeedanceHook) -> None:
    request_id = submit_one(hook)
    result = hook.get_result(request_id)
    assert result.state in (RequestStatus.IN_QUEUE, RequestStatus.IN_PROGRESS)
    assert result.output is None


def test_result_with_cost(hook: SeedanceHook) -> None:
    request_id = submit_one(hook)
    wait_until(hook, request_id, RequestStatus.COMPLETED)
    result = hook.get_result(request_id, include_cost=True)
    assert isinstance(result.cost, float)
    assert result.cost > 0


def test_cancel_a_queued_request(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.set_plan(JobPlan(queue_seconds=30, run_seconds=1))
    request_id = submit_one(hook)
    outcome = hook.cancel(request_id)
    assert outcome.cancelled
    assert hook.get_status(request_id).state is RequestStatus.CANCELLED


def test_cancel_a_running_request_is_not_an_error(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=30))
    request_id = submit_one(hook)
    wait_until(hook, request_id, RequestStatus.IN_PROGRESS)
    outcome = hook.cancel(request_id)
    assert not outcome.cancelled
    assert outcome.outcome == "not_cancellable"
    assert hook.get_status(request_id).state is RequestStatus.IN_PROGRESS


def test_get_model_reads_the_catalog(hook: SeedanceHook) -> None:
    info = hook.get_model(MODEL)
    assert info.model_id == MODEL
    assert info.base_price_usd is not None
    assert info.base_price_usd > 0
    assert info.price_unit in ("second", "output")


def test_failed_request_error_text(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.set_plan(
        JobPlan(queue_seconds=0, run_seconds=0.1, outcome="fail", error="content policy violation")
    )
    request_id = submit_one(hook)
    deadline = time.monotonic() + 10
    while (status := hook.get_status(request_id).state).is_active():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status in (RequestStatus.COMPLETED, RequestStatus.FAILED)
    result = hook.get_result(request_id)
    assert result.state is RequestStatus.FAILED
    assert "content policy violation" in result.error_text


# -- input checks happen before any HTTP call ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda h: h.get_status("bad id/../x"), "request_id"),
        (lambda h: h.get_result(""), "request_id"),
        (lambda h: h.cancel("x" * 129), "request_id"),
        (lambda h: h.submit("", PAYLOAD), "model_id"),
        (lambda h: h.submit("bytedance//x", PAYLOAD), "model_id"),
        (lambda h: h.submit(MODEL, {"prompt": object()}), "JSON-serialisable"),
        (lambda h: h.submit(MODEL, ["not", "a", "mapping"]), "mapping"),
    ],
)
def test_bad_arguments_fail_before_any_request(
    hook: SeedanceHook, emulator: SeedanceEmulator, call, match: str
) -> None:
    with pytest.raises(SeedanceInputError, match=match):
        call(hook)
    assert emulator.state.requests() == []


def test_an_input_that_contains_itself_is_refused_naming_where(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    # json.dumps only says "Circular reference detected"; the message must still name the field.
    steps: list[object] = [{"seed": 1}]
    steps.append(steps)
    with pytest.raises(SeedanceInputError, match=r"^input\.steps\[1\]: .*\(it contains itself\)") as info:
        hook.submit(MODEL, {"prompt": "x", "steps": steps})
    assert info.value.errors == [{"field": "input.steps[1]", "rule": "JSON-serialisable: it contains itself"}]
    assert emulator.state.requests() == []


# -- submit is never retried -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="http_error", endpoint="submit", status_code=500),
        Fault(kind="http_error", endpoint="submit", status_code=503, retry_after=0),
        Fault(kind="drop", endpoint="submit"),
        Fault(kind="malformed_json", endpoint="submit"),
        Fault(kind="slow", endpoint="submit", delay_seconds=3),
    ],
    ids=["500", "503", "drop", "malformed-json", "timeout"],
)
def test_ambiguous_submit_is_reported_not_retried(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator, timeout=1, max_retries=5))
    emulator.add_fault(fault)
    with pytest.raises(SeedanceSubmissionStateUnknownError, match="NOT retried") as info:
        SeedanceHook().submit(MODEL, PAYLOAD)
    assert info.value.model_id == MODEL
    assert emulator.state.count("submit") == 1
    assert TEST_TOKEN not in str(info.value)


def test_rate_limited_submit_is_not_retried_and_says_so(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="submit", status_code=429, retry_after=0))
    with pytest.raises(SeedanceRateLimitError):
        submit_one(hook)
    assert emulator.state.count("submit") == 1


def test_submit_to_an_unreachable_host_says_nothing_was_submitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_DEFAULT",
        json.dumps({"conn_type": "seedance", "host": f"http://127.0.0.1:{free_port()}", "password": "t"}),
    )
    with pytest.raises(SeedanceConnectionError, match="Nothing was submitted"):
        SeedanceHook().submit(MODEL, PAYLOAD)


def test_submit_rejected_input_is_a_clear_error(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    with pytest.raises(SeedanceInputRejectedError, match="submit failed: HTTP 422"):
        hook.submit(MODEL, {**PAYLOAD, "duration": 99})
    assert emulator.state.count("submit") == 1


def test_submit_unknown_model(hook: SeedanceHook) -> None:
    with pytest.raises(SeedanceInvalidIdentifierError, match="400001"):
        hook.submit("nobody/no-such-model", PAYLOAD)


# -- idempotent calls are retried ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="http_error", endpoint="status", status_code=429, retry_after=0, times=2),
        Fault(kind="http_error", endpoint="status", status_code=500, times=2),
        Fault(kind="http_error", endpoint="status", status_code=502, times=2),
        Fault(kind="http_error", endpoint="status", status_code=503, times=2),
        Fault(kind="drop", endpoint="status", times=2),
        Fault(kind="malformed_json", endpoint="status", times=2),
        Fault(kind="slow", endpoint="status", delay_seconds=2, times=2),
    ],
    ids=["429", "500", "502", "503", "drop", "malformed-json", "read-timeout"],
)
def test_transient_status_failures_are_retried(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator, timeout=0.5))
    emulator.set_plan(JobPlan(queue_seconds=30, run_seconds=1))
    hook = SeedanceHook()
    request_id = submit_one(hook)
    emulator.add_fault(fault)
    assert hook.get_status(request_id).state is RequestStatus.IN_QUEUE
    assert emulator.state.count("status") == 3


def test_transient_result_and_cancel_failures_are_retried(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    emulator.set_plan(JobPlan(queue_seconds=30, run_seconds=1))
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="http_error", endpoint="result", status_code=502, times=1))
    emulator.add_fault(Fault(kind="drop", endpoint="cancel", times=1))
    assert hook.get_result(request_id).state is RequestStatus.IN_QUEUE
    assert hook.cancel(request_id).cancelled
    assert (emulator.state.count("result"), emulator.state.count("cancel")) == (2, 2)


def test_retry_budget_is_bounded(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=None))
    with pytest.raises(SeedanceServerError, match="HTTP 503") as info:
        hook.get_status(request_id)
    assert info.value.request_id == request_id
    assert emulator.state.count("status") == 1 + hook.config.max_retries


def test_retry_after_is_honoured(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=429, retry_after=1, times=1))
    started = time.monotonic()
    hook.get_status(request_id)
    # The connection's backoff is 0.05 s, so only the server's Retry-After explains a wait of a second.
    assert time.monotonic() - started >= 0.95


@pytest.mark.parametrize(
    ("status_code", "error_code", "exc_type"),
    [
        (404, 404001, SeedanceNotFoundError),
        (403, 403001, SeedancePermissionDeniedError),
        (401, 400004, SeedanceAuthenticationError),
        (401, None, SeedanceAuthenticationError),
        (402, None, SeedanceInsufficientBalanceError),
        (400, 400002, SeedanceInsufficientBalanceError),
        (400, 400001, SeedanceInvalidIdentifierError),
        (422, None, SeedanceInputRejectedError),
        (418, None, SeedanceAPIError),
    ],
)
def test_permanent_errors_map_to_specific_exceptions_and_are_not_retried(
    hook: SeedanceHook, emulator: SeedanceEmulator, status_code: int, error_code: int | None, exc_type: type
) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(
        Fault(
            kind="http_error", endpoint="status", status_code=status_code, error_code=error_code, times=None
        )
    )
    with pytest.raises(exc_type) as info:
        hook.get_status(request_id)
    assert info.value.http_status == status_code
    assert request_id in str(info.value)
    assert emulator.state.count("status") == 1


def test_http_200_with_error_code_is_an_error(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="error_200", endpoint="result", error_code=404001, times=None))
    with pytest.raises(SeedanceNotFoundError, match="404001"):
        hook.get_result(request_id)
    assert emulator.state.count("result") == 1


def test_garbled_answers_exhaust_retries_with_a_clear_error(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="malformed_json", endpoint="status", times=None))
    with pytest.raises(SeedanceMalformedResponseError, match="not valid JSON"):
        hook.get_status(request_id)


def test_unknown_status_value_is_reported_as_unknown(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="unknown_status", endpoint="status", times=1))
    status = hook.get_status(request_id)
    assert status.state is RequestStatus.UNKNOWN
    assert not status.state.is_active()  # so the waiters read /result, the final word


def test_request_of_another_account(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.state.add_token("sk-other-account")
    other = SeedanceHook(timeout=5)
    other.__dict__["config"] = type(hook.config)(base_url=emulator.base_url, token="sk-other-account")
    request_id = submit_one(other)
    with pytest.raises(SeedancePermissionDeniedError, match="another RunComfy account"):
        hook.get_status(request_id)


def test_unknown_request(hook: SeedanceHook) -> None:
    with pytest.raises(SeedanceNotFoundError, match="unknown, deleted or expired"):
        hook.get_status("does-not-exist")


# -- async side ----------------------------------------------------------------------------------------------


async def test_async_calls_roundtrip(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    try:
        submitted = await hook.asubmit(MODEL, PAYLOAD)
        assert (await hook.aget_status(submitted.request_id)).state.is_active()
        assert (await hook.aget_result(submitted.request_id)).output is None
        assert (await hook.acancel(submitted.request_id)).cancelled in (True, False)
        assert (await hook.aget_model(MODEL)).model_id == MODEL
        assert emulator.state.count("submit") == 1
    finally:
        await aclose_shared_clients()


async def test_async_submit_is_never_retried(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="submit", status_code=502))
    try:
        with pytest.raises(SeedanceSubmissionStateUnknownError):
            await hook.asubmit(MODEL, PAYLOAD)
    finally:
        await aclose_shared_clients()
    assert emulator.state.count("submit") == 1


async def test_async_retries_transient_failures(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=429, retry_after=0, times=2))
    try:
        assert (await hook.aget_status(request_id)).state.is_active()
    finally:
        await aclose_shared_clients()
    assert emulator.state.count("status") == 3


async def test_async_hooks_share_one_client_per_loop(seedance_conn: str) -> None:
    first, second = SeedanceHook(seedance_conn), SeedanceHook(seedance_conn)
    try:
        client_one = _shared_async_pool(await first.aget_config())
        client_two = _shared_async_pool(await second.aget_config())
        assert client_one is client_two
    finally:
        await aclose_shared_clients()


async def test_async_calls_do_not_block_the_event_loop(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="slow", endpoint="status", delay_seconds=0.6, times=1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await hook.aget_status(request_id)
    finally:
        task.cancel()
        await aclose_shared_clients()
    # A blocking call would have starved the ticker for the whole 0.6 s.
    assert ticks >= 20


async def test_many_concurrent_async_calls_use_a_bounded_pool(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    request_id = submit_one(hook)
    try:
        results = await asyncio.gather(*(hook.aget_status(request_id) for _ in range(200)))
        pool = _shared_async_pool(await hook.aget_config())
        assert len(pool.clients) == ASYNC_MAX_CONNECTIONS
        # Each client of the pool holds at most one connection.
        assert all(len(client._transport._pool.connections) <= 1 for client in pool.clients)  # type: ignore[attr-defined]
    finally:
        await aclose_shared_clients()
    assert len(results) == 200
    # What the server saw: 200 requests over at most 20 TCP connections.
    polls = emulator.requests("status")
    assert len(polls) == 200
    assert 1 <= len({call.client_port for call in polls}) <= ASYNC_MAX_CONNECTIONS


async def test_sequential_async_calls_reuse_one_warm_connection(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    request_id = submit_one(hook)
    try:
        for _ in range(5):
            await hook.aget_status(request_id)
        # A light load opens one client, not one per call or one per pool slot.
        assert len(_shared_async_pool(await hook.aget_config()).clients) == 1
    finally:
        await aclose_shared_clients()
    assert len({call.client_port for call in emulator.requests("status")}) == 1


async def test_pool_waiters_are_served_first_come_first_served(seedance_conn: str) -> None:
    pool = _AsyncClientPool(await SeedanceHook(seedance_conn).aget_config(), size=1)
    order: list[int] = []
    try:
        async with pool.lease():

            async def wait(i: int) -> None:
                async with pool.lease():
                    order.append(i)

            waiters = [asyncio.create_task(wait(i)) for i in range(5)]
            await asyncio.sleep(0)
        await asyncio.gather(*waiters)
    finally:
        await pool.aclose()
    assert order == [0, 1, 2, 3, 4]
    assert len(pool.clients) == 1


async def test_pool_repr_shows_no_token(seedance_conn: str) -> None:
    config = await SeedanceHook(seedance_conn).aget_config()
    pool = _AsyncClientPool(config)
    try:
        async with pool.lease():
            pass
        assert config.token not in repr(pool)
        assert repr(pool) == "_AsyncClientPool(clients=1, idle=1)"
    finally:
        await pool.aclose()


# -- secrets -------------------------------------------------------------------------------------------------


def test_token_never_in_repr_logs_or_errors(
    hook: SeedanceHook, emulator: SeedanceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = submit_one(hook)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=None))
    with pytest.raises(SeedanceError) as info:
        hook.get_status(request_id)
    texts = [repr(hook), repr(hook.config), str(hook.config), str(info.value), repr(info.value), caplog.text]
    for text in texts:
        assert TEST_TOKEN not in text
    assert "retrying" in caplog.text
