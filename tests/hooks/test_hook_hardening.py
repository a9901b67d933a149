"""Issue 13 at hook level, against the emulator over real HTTP: created requests, tokens, deadlines."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceRateLimitError,
    SeedanceSubmissionStateUnknownError,
)
from airflow_provider_seedance.hooks._responses import safe_error_text, transport_error
from airflow_provider_seedance.hooks.seedance import (
    SeedanceConnectionConfig,
    SeedanceHook,
    aclose_shared_clients,
)
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import Fault, SeedanceEmulator
from tests._support import conn_json
from tests.operators._dag_support import CapturedLogs

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
PAYLOAD = {"prompt": "A lighthouse at dusk", "first_frame_image_url": "https://example.com/l.png"}

FIRST_HALF = "sk-nl-FIRSTHALF-3c1d9e"
SECOND_HALF = "SECONDHALF-77ab20"
BAD_TOKENS = {
    "newline": f"{FIRST_HALF}\n{SECOND_HALF}",
    "crlf": f"{FIRST_HALF}\r\n{SECOND_HALF}",
    "tab": f"{FIRST_HALF}\t{SECOND_HALF}",
    "nul": f"{FIRST_HALF}\x00{SECOND_HALF}",
    "del": f"{FIRST_HALF}\x7f{SECOND_HALF}",
    "space": f"{FIRST_HALF} {SECOND_HALF}",
    "non-ascii": f"{FIRST_HALF}\u00e9{SECOND_HALF}",
    "line-separator": f"{FIRST_HALF}\u2028{SECOND_HALF}",
}


def leaks(text: str) -> bool:
    """Whether ``text`` holds any part of the bad tokens."""
    return FIRST_HALF in text or SECOND_HALF in text or "Bearer" in text


def bad_token_conn(emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, token: str) -> str:
    """Point ``seedance_bad`` at the emulator with ``token`` as its password."""
    fields = json.loads(conn_json(emulator))
    fields["password"] = token
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_BAD", json.dumps(fields))
    return "seedance_bad"


# -- item 1: an answer that names a request id is a created request -----------------------------------------


@pytest.mark.parametrize(
    "added",
    [
        None,  # error_code 500000 + error_message
        {"code": 500, "message": "internal error"},
        {"error_code": 400002, "error_message": "no balance"},
        {"error": "something odd", "unknown_field": [1, 2]},
        {"status_url": 5, "result_url": None},  # garbled URLs beside a good id
    ],
    ids=["error_code", "code", "balance-code", "error-text", "garbled-urls"],
)
def test_a_2xx_submit_naming_a_request_id_is_a_created_request(
    emulator: SeedanceEmulator,
    hook: SeedanceHook,
    caplog: pytest.LogCaptureFixture,
    added: dict[str, Any] | None,
) -> None:
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", body=added))
    caplog.set_level(logging.WARNING)
    submitted = hook.submit(MODEL, PAYLOAD)
    [job] = emulator.state.jobs()
    assert submitted.request_id == job.request_id
    assert emulator.state.count("submit") == 1
    if added is None or "status_url" not in added:
        assert any(job.request_id in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_2xx_submit_naming_a_request_id_is_a_created_request_async(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", error_code=400001))

    async def go() -> str:
        try:
            return (await hook.asubmit(MODEL, PAYLOAD)).request_id
        finally:
            await aclose_shared_clients()

    request_id = asyncio.run(go())
    assert [job.request_id for job in emulator.state.jobs()] == [request_id]


@pytest.mark.parametrize("status", [400, 402, 429, 500, 503])
def test_an_error_status_naming_a_request_id_is_state_unknown_naming_it(
    emulator: SeedanceEmulator, hook: SeedanceHook, status: int
) -> None:
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", status_code=status))
    with pytest.raises(SeedanceSubmissionStateUnknownError) as raised:
        hook.submit(MODEL, PAYLOAD)
    [job] = emulator.state.jobs()
    assert raised.value.request_id == job.request_id
    assert job.request_id in str(raised.value)
    assert f"HTTP {status}" in str(raised.value)
    assert "NOT submitted again" in str(raised.value)
    assert emulator.state.count("submit") == 1


@pytest.mark.parametrize("named", ["bad/id", "x" * 129, 12345, ""], ids=["slash", "too-long", "int", "empty"])
def test_a_2xx_naming_an_invalid_request_id_is_state_unknown_naming_it(
    emulator: SeedanceEmulator, hook: SeedanceHook, named: object
) -> None:
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", body={"request_id": named}))
    with pytest.raises(SeedanceSubmissionStateUnknownError) as raised:
        hook.submit(MODEL, PAYLOAD)
    text = str(raised.value)
    assert "Submission state unknown" in text
    assert repr(named)[:40] in text
    assert raised.value.request_id is None
    assert emulator.state.count("submit") == 1


def test_an_error_without_a_request_id_is_still_a_refusal(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    emulator.add_fault(Fault(kind="error_200", endpoint="submit", error_code=400002))
    with pytest.raises(Exception) as raised:
        hook.submit(MODEL, PAYLOAD)
    assert not isinstance(raised.value, SeedanceSubmissionStateUnknownError)
    assert emulator.state.jobs() == []


# -- item 8: the token is checked when the connection is read; h11 texts are never copied -------------------


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_token_http_cannot_carry_is_refused_without_echoing_it(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    conn_id = bad_token_conn(emulator, monkeypatch, token)
    hook = SeedanceHook(conn_id)
    try:
        with pytest.raises(SeedanceConfigurationError) as raised:
            hook.submit(MODEL, PAYLOAD)
        text = str(raised.value)
        assert "API token contains" in text
        assert "Submission state unknown" not in text
        assert not leaks(text)
        assert not leaks(repr(raised.value))
        assert raised.value.__cause__ is None

        with pytest.raises(SeedanceConfigurationError) as raised_get:
            hook.get_status("abc123")
        assert not leaks(str(raised_get.value))

        ok, message = hook.test_connection()
        assert ok is False
        assert "API token contains" in message
        assert not leaks(message)
    finally:
        hook.close()
    assert emulator.state.requests() == []


def test_a_bad_token_is_refused_on_the_async_side(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = SeedanceHook(bad_token_conn(emulator, monkeypatch, BAD_TOKENS["newline"]))

    async def go() -> BaseException:
        try:
            await hook.aget_status("abc123")
        except BaseException as exc:
            return exc
        finally:
            await aclose_shared_clients()
        raise AssertionError("no error")

    error = asyncio.run(go())
    assert isinstance(error, SeedanceConfigurationError)
    assert not leaks(str(error))
    assert emulator.state.requests() == []


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER  "])
def test_a_token_pasted_with_its_bearer_prefix_is_refused_saying_so(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    # Copied from a curl example: the header would read "Bearer Bearer ..." and every call would get a 401.
    hook = SeedanceHook(bad_token_conn(emulator, monkeypatch, f"{prefix}{FIRST_HALF}"))
    try:
        with pytest.raises(SeedanceConfigurationError, match="starts with 'Bearer '") as raised:
            hook.get_status("abc123")
        assert FIRST_HALF not in str(raised.value)
    finally:
        hook.close()
    assert emulator.state.requests() == []


def test_the_control_character_rule_names_the_problem(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SeedanceHook(bad_token_conn(emulator, monkeypatch, BAD_TOKENS["newline"]))
    with pytest.raises(SeedanceConfigurationError, match="line break, tab or other control character"):
        config.config  # noqa: B018 (the lookup is what is tested)
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_BAD", conn_json(emulator))  # a clean token still works
    assert SeedanceHook("seedance_bad").config.token == emulator.token


def test_surrounding_whitespace_is_still_forgiven(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = SeedanceHook(bad_token_conn(emulator, monkeypatch, f"  {emulator.token}\n"))
    try:
        assert hook.submit(MODEL, PAYLOAD).request_id
    finally:
        hook.close()


def _unvalidated_hook(emulator: SeedanceEmulator, token: str) -> SeedanceHook:
    """A hook whose config skipped the connection check (defence in depth for the h11 path)."""
    hook = SeedanceHook("unused")
    hook.__dict__["config"] = SeedanceConnectionConfig(
        base_url=emulator.base_url, token=token, timeout=5, max_retries=2, retry_backoff=0.01
    )
    return hook


def test_h11_refusing_the_header_is_not_state_unknown_and_quotes_nothing(emulator: SeedanceEmulator) -> None:
    hook = _unvalidated_hook(emulator, BAD_TOKENS["newline"])
    try:
        with pytest.raises(SeedanceConfigurationError) as raised:
            hook.submit(MODEL, PAYLOAD)
        with pytest.raises(SeedanceConfigurationError) as raised_get:
            hook.get_status("abc123")
        ok, message = hook.test_connection()
    finally:
        hook.close()
    for error in (raised.value, raised_get.value):
        text = str(error)
        assert "could not be sent" in text
        assert "Nothing was sent" in text
        assert "Submission state unknown" not in text
        assert not leaks(text)
        assert not leaks(repr(error))
        # Not even through the exception chain (h11's own message quotes the header).
        assert error.__cause__ is None
        assert error.__context__ is None
    assert ok is False
    assert not leaks(message)
    assert emulator.state.count("submit") == 0


def test_h11_refusing_the_header_on_the_async_side(emulator: SeedanceEmulator) -> None:
    hook = _unvalidated_hook(emulator, BAD_TOKENS["crlf"])

    async def go() -> list[BaseException]:
        errors: list[BaseException] = []
        try:
            for call in (hook.asubmit(MODEL, PAYLOAD), hook.aget_status("abc123")):
                try:
                    await call
                except BaseException as exc:
                    errors.append(exc)
        finally:
            await aclose_shared_clients()
        return errors

    errors = asyncio.run(go())
    assert [type(error) for error in errors] == [SeedanceConfigurationError] * 2
    assert not any(leaks(str(error)) or error.__context__ is not None for error in errors)


def test_error_texts_naming_a_header_are_withheld() -> None:
    local = httpx.LocalProtocolError("Illegal header value b'Bearer sk-nl-FIRSTHALF-3c1d9e'")
    assert not leaks(safe_error_text(local))
    odd = httpx.ReadError("broken while sending Authorization: Bearer sk-nl-FIRSTHALF-3c1d9e")
    assert not leaks(safe_error_text(odd))
    assert not leaks(str(transport_error(odd, call="status")))
    assert isinstance(transport_error(odd, call="status"), SeedanceConnectionError)
    assert safe_error_text(httpx.ReadTimeout("timed out")) == "ReadTimeout: timed out"


# -- item 14: no retry wait crosses the caller's deadline ----------------------------------------------------


def test_retry_after_never_crosses_the_deadline(emulator: SeedanceEmulator, hook: SeedanceHook) -> None:
    request_id = hook.submit(MODEL, PAYLOAD).request_id
    emulator.add_fault(
        Fault(kind="http_error", endpoint="status", status_code=429, retry_after=60, times=None)
    )
    hook.deadline = time.time() + 1.0
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            hook.get_status(request_id)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "a Retry-After wait crossed the deadline"
    assert time.monotonic() - started < 15
    assert isinstance(outcome[0], SeedanceRateLimitError)
    assert emulator.state.count("status") == 1  # the 60 s wait would have crossed it: not made


def test_backoff_stops_at_the_deadline_but_retries_before_it(
    emulator: SeedanceEmulator, hook: SeedanceHook
) -> None:
    request_id = hook.submit(MODEL, PAYLOAD).request_id
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, times=1))
    hook.deadline = time.time() + 30
    assert hook.get_status(request_id).request_id == request_id  # the 0.05 s backoff fits: retried
    assert emulator.state.count("status") == 2


def test_retry_after_never_crosses_the_deadline_async(emulator: SeedanceEmulator, hook: SeedanceHook) -> None:
    request_id = hook.submit(MODEL, PAYLOAD).request_id
    emulator.add_fault(
        Fault(kind="http_error", endpoint="result", status_code=429, retry_after=60, times=None)
    )
    hook.deadline = time.time() + 1.0

    async def go() -> BaseException:
        try:
            await asyncio.wait_for(hook.aget_result(request_id), 15)
        except BaseException as exc:
            return exc
        finally:
            await aclose_shared_clients()
        raise AssertionError("no error")

    assert isinstance(asyncio.run(go()), SeedanceRateLimitError)


# -- item 15: the probe's "unknown id" answer means the token was accepted -----------------------------------


@pytest.mark.parametrize(
    ("status", "code", "ok"),
    [(400, 400001, True), (404, 404001, True), (404, None, True), (401, 400001, False), (400, 400004, False)],
)
def test_connection_probe_answers(
    emulator: SeedanceEmulator, hook: SeedanceHook, status: int, code: int | None, ok: bool
) -> None:
    emulator.add_fault(
        Fault(kind="http_error", endpoint="status", status_code=status, error_code=code, times=None)
    )
    accepted, message = hook.test_connection()
    assert accepted is ok, message
    if ok:
        assert "token was accepted" in message
    assert emulator.state.count("submit") == 0


# -- a token sent unencrypted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("http://203.0.113.7:8765", True),
        ("http://emulator:8765", True),
        ("http://user:pw@api.example.com", True),
        ("http://127.0.0.1:8765", False),
        ("http://127.8.9.10", False),
        ("http://localhost:8765", False),
        ("http://[::1]:8765", False),
        ("https://model-api.runcomfy.net", False),
        ("model-api.runcomfy.net", False),  # no scheme: https
    ],
)
def test_a_token_sent_unencrypted_over_a_network_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, logs: CapturedLogs, host: str, warned: bool
) -> None:
    from airflow_provider_seedance.hooks import _connection

    monkeypatch.setattr(_connection, "_TOKEN_EXPOSURE_WARNED", set())
    token = "sk-cleartext-5d1e-token"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_PLAIN", json.dumps({"conn_type": "seedance", "host": host, "password": token})
    )
    for _ in range(3):  # three hooks, e.g. three triggers of a fan-in: one line
        SeedanceHook("seedance_plain").config  # noqa: B018 - resolving the connection is the point
    lines = logs.lines("unencrypted")
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "'seedance_plain'" in lines[0]
        assert "Use https://" in lines[0]
        assert "pw" not in lines[0]
    assert token not in logs.text()


@pytest.mark.parametrize(
    ("host", "warned"),
    [("https://api.example.com", True), ("https://127.0.0.1:8443", False), ("https://localhost", False)],
)
def test_an_unverified_certificate_off_loopback_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, logs: CapturedLogs, host: str, warned: bool
) -> None:
    from airflow_provider_seedance.hooks import _connection

    monkeypatch.setattr(_connection, "_TOKEN_EXPOSURE_WARNED", set())
    fields = {
        "conn_type": "seedance",
        "host": host,
        "password": "sk-unverified-88c1",
        "extra": {"verify": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_UNVERIFIED", json.dumps(fields))
    for _ in range(3):
        SeedanceHook("seedance_unverified").config  # noqa: B018 - resolving the connection is the point
    lines = logs.lines("does not verify the TLS certificate")
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "ca_bundle" in lines[0]
    # The same host with verification on says nothing.
    fields["extra"] = {}
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_UNVERIFIED", json.dumps(fields))
    SeedanceHook("seedance_unverified").config  # noqa: B018
    assert len(logs.lines("does not verify the TLS certificate")) == len(lines)
    assert "sk-unverified-88c1" not in logs.text()
