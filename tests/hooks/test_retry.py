"""The single retry policy of idempotent calls: what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone

import pytest
from tenacity import RetryCallState, Retrying

from airflow_provider_seedance.exceptions import (
    SeedanceAuthenticationError,
    SeedanceConnectionError,
    SeedanceError,
    SeedanceInputRejectedError,
    SeedanceMalformedResponseError,
    SeedanceNotFoundError,
    SeedanceRateLimitError,
    SeedanceServerError,
    SeedanceSubmissionStateUnknownError,
)
from airflow_provider_seedance.hooks.retry import (
    RETRY_AFTER_MAX_SECONDS,
    RETRY_JITTER_SECONDS,
    RETRY_WAIT_INITIAL_SECONDS,
    RETRY_WAIT_MAX_SECONDS,
    BackoffWait,
    async_retrying,
    is_retryable,
    parse_retry_after,
    retrying,
)

NO_WAIT = BackoffWait(initial=0, maximum=0, jitter=0)


def state_after(attempt: int, exc: BaseException) -> RetryCallState:
    """Return tenacity's state after ``attempt`` failed with ``exc``."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


class FlakyCall:
    """A call that raises the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# -- what may be repeated ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        SeedanceServerError("HTTP 503"),
        SeedanceRateLimitError("HTTP 429"),
        SeedanceConnectionError("connection reset"),
        SeedanceMalformedResponseError("not valid JSON"),
    ],
    ids=["5xx", "429", "transport", "garbled"],
)
def test_transient_errors_are_retryable(exc: SeedanceError) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        SeedanceSubmissionStateUnknownError("the submit may or may not have started a video"),
        SeedanceNotFoundError("unknown request"),
        SeedanceAuthenticationError("bad token"),
        SeedanceInputRejectedError("bad input"),
        ValueError("a bug"),
        KeyboardInterrupt(),
    ],
    ids=["ambiguous-submit", "404", "401", "422", "bug", "interrupt"],
)
def test_everything_else_is_not(exc: BaseException) -> None:
    assert not is_retryable(exc)


# -- how long to wait ----------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_and_is_capped() -> None:
    wait = BackoffWait(initial=0.5, maximum=3.0, jitter=0)
    delays = [wait(state_after(attempt, SeedanceServerError("503"))) for attempt in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_adds_up_to_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    wait = BackoffWait(initial=1.0, maximum=60.0, jitter=0.25)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    assert wait(state_after(1, SeedanceServerError("503"))) == 1.25
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    assert wait(state_after(1, SeedanceServerError("503"))) == 1.0


def test_jitter_spreads_the_retries_of_many_callers() -> None:
    wait = BackoffWait(initial=1.0, maximum=60.0, jitter=1.0)
    delays = {wait(state_after(3, SeedanceServerError("503"))) for _ in range(50)}
    assert len(delays) > 1
    assert all(4.0 <= delay <= 5.0 for delay in delays)


def test_defaults() -> None:
    wait = BackoffWait()
    assert (wait.initial, wait.maximum, wait.jitter) == (
        RETRY_WAIT_INITIAL_SECONDS,
        RETRY_WAIT_MAX_SECONDS,
        RETRY_JITTER_SECONDS,
    )


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [(7, 7.0), (0, 0.0), (2.5, 2.5), (-30, 0.0), (10**9, RETRY_AFTER_MAX_SECONDS)],
    ids=["seconds", "zero", "fraction", "negative", "huge"],
)
def test_the_servers_retry_after_wins_within_bounds(retry_after: float, delay: float) -> None:
    wait = BackoffWait(initial=1.0, maximum=60.0, jitter=1.0)
    assert wait(state_after(4, SeedanceRateLimitError("429", retry_after=retry_after))) == delay


# -- when to give up -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_a_persistent_transient_error_is_tried_max_retries_plus_one_times(max_retries: int) -> None:
    call = FlakyCall(*(SeedanceServerError(f"HTTP 503 #{n}") for n in range(10)))
    with pytest.raises(SeedanceServerError, match=f"#{max_retries}$"):
        retrying("status", max_retries, NO_WAIT)(call)
    assert call.calls == max_retries + 1


def test_a_negative_budget_still_makes_the_call_once() -> None:
    call = FlakyCall(SeedanceServerError("HTTP 503"))
    with pytest.raises(SeedanceServerError):
        retrying("status", -2, NO_WAIT)(call)
    assert call.calls == 1


def test_a_transient_error_then_success_returns_the_result() -> None:
    call = FlakyCall(SeedanceConnectionError("reset"), SeedanceServerError("502"))
    assert retrying("result", 2, NO_WAIT)(call) == "ok"
    assert call.calls == 3


def test_a_permanent_error_is_raised_at_once() -> None:
    call = FlakyCall(SeedanceNotFoundError("unknown request"))
    with pytest.raises(SeedanceNotFoundError):
        retrying("status", 5, NO_WAIT)(call)
    assert call.calls == 1


def test_each_retry_is_logged_with_the_call_attempt_and_delay(caplog: pytest.LogCaptureFixture) -> None:
    call = FlakyCall(SeedanceServerError("HTTP 503"))
    wait = BackoffWait(initial=0.01, maximum=0.01, jitter=0)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_seedance.hooks.retry"):
        assert retrying("cancel", 1, wait)(call) == "ok"
    [record] = caplog.records
    assert record.getMessage() == "Seedance cancel failed (attempt 1): HTTP 503; retrying in 0.0 s"


def test_the_async_twin_follows_the_same_policy() -> None:
    sleeps: list[float] = []

    async def run() -> tuple[str, int]:
        call = FlakyCall(SeedanceServerError("503"), SeedanceRateLimitError("429", retry_after=0))
        controller = async_retrying("status", 2, BackoffWait(initial=0.01, maximum=0.01, jitter=0))
        controller.sleep = fake_sleep  # type: ignore[method-assign]

        async def attempt() -> str:
            return call()

        return await controller(attempt), call.calls

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    assert asyncio.run(run()) == ("ok", 3)
    assert sleeps == [0.01, 0.0]


def test_the_async_twin_gives_up_like_the_sync_one() -> None:
    async def run() -> int:
        call = FlakyCall(*(SeedanceServerError("503") for _ in range(5)))

        async def attempt() -> str:
            return call()

        with pytest.raises(SeedanceServerError):
            await async_retrying("status", 1, NO_WAIT)(attempt)
        return call.calls

    assert asyncio.run(run()) == 2


# -- Retry-After ---------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Fri, 04 Dec 2026 12:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 12:01:00 +0000", 60.0),
        # A zone-less date ("-0000") is UTC: before, the hook raised TypeError subtracting it from an aware
        # now.
        ("Fri, 04 Dec 2026 12:00:10 -0000", 10.0),
        ("Fri, 04 Dec 2026 11:00:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_delta_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "-inf", "1e999", "Fri, 99 Foo 2026"])
def test_unusable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_defaults_to_the_clock() -> None:
    later = datetime.now(timezone.utc).timestamp() + 3600
    text = datetime.fromtimestamp(later, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 3590 <= (parse_retry_after(text) or 0) <= 3600
