"""The provider's single retry policy for idempotent calls (status, result, cancel, catalog, downloads).

Submissions never go through this module: the API has no idempotency key, so a repeated POST could
start and bill a second video.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from airflow_provider_seedance.exceptions import SeedanceAPIError

log = logging.getLogger(__name__)

RETRY_WAIT_INITIAL_SECONDS = 1.0
"""First backoff delay; doubled on every further attempt."""

RETRY_WAIT_MAX_SECONDS = 60.0
"""Upper bound of one exponential backoff delay."""

RETRY_AFTER_MAX_SECONDS = 300.0
"""A server's ``Retry-After`` is honoured up to this bound (a hostile or buggy header must not park us)."""

RETRY_JITTER_SECONDS = 1.0
"""Random extra delay, so thousands of triggers do not retry in lockstep after an outage."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """
    Return the seconds a ``Retry-After`` header asks to wait, or ``None`` when it says nothing usable.

    Both forms of RFC 9110 10.2.3 are read: delta-seconds (``120``; a decimal such as ``1.5`` is accepted)
    and an HTTP date (``Wed, 21 Oct 2026 07:28:00 GMT``; a date in the past means "now", 0). Negative,
    infinite or unparseable values give ``None`` (the caller's own backoff applies); the upper bound is
    :data:`RETRY_AFTER_MAX_SECONDS`, applied where the wait is taken.

    :param value: the header value, if any.
    :param now: the current time (an aware datetime); defaults to the clock.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are always UTC
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def is_retryable(exc: BaseException) -> bool:
    """
    Say whether a failed idempotent call may be repeated.

    :param exc: the exception the call raised.
    """
    return isinstance(exc, SeedanceAPIError) and exc.retryable


class BackoffWait:
    """
    Compute the delay before the next attempt: the server's ``Retry-After`` if any, else backoff + jitter.

    :param initial: the first exponential delay, in seconds.
    :param maximum: the upper bound of an exponential delay, in seconds.
    :param jitter: the upper bound of the random delay added to every wait, in seconds.
    """

    def __init__(
        self,
        initial: float = RETRY_WAIT_INITIAL_SECONDS,
        maximum: float = RETRY_WAIT_MAX_SECONDS,
        jitter: float = RETRY_JITTER_SECONDS,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX_SECONDS)
        backoff = min(self.initial * (2 ** (retry_state.attempt_number - 1)), self.maximum)
        return backoff + random.uniform(0, self.jitter)


class StopBeforeDeadline(stop_base):
    """
    Stop retrying when the next wait would end after ``deadline``: no backoff or ``Retry-After`` crosses it.

    :param deadline: epoch seconds (``time.time()``) by which the caller needs an answer.
    :param call: a short name of the call, for the log.
    """

    def __init__(self, deadline: float, call: str = "call") -> None:
        self.deadline = deadline
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        # tenacity computes the wait before asking the stop condition, so the upcoming sleep is known.
        will_stop = time.time() + retry_state.upcoming_sleep > self.deadline
        if will_stop:
            log.warning(
                "Seedance %s failed (attempt %d): %s; not retrying, since waiting %.1f s would pass the "
                "deadline",
                self.call,
                retry_state.attempt_number,
                retry_state.outcome.exception() if retry_state.outcome else None,
                retry_state.upcoming_sleep,
            )
        return will_stop


def _log_before_sleep(call: str) -> Callable[[RetryCallState], None]:
    def before_sleep(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Seedance %s failed (attempt %d): %s; retrying in %.1f s",
            call,
            retry_state.attempt_number,
            exc,
            delay,
        )

    return before_sleep


def _common(call: str, max_retries: int, wait: BackoffWait | None, deadline: float | None) -> dict[str, Any]:
    stop: stop_base = stop_after_attempt(max(0, max_retries) + 1)
    if deadline is not None:
        stop = stop | StopBeforeDeadline(deadline, call)
    return {
        "stop": stop,
        "wait": wait or BackoffWait(),
        "retry": retry_if_exception(is_retryable),
        "before_sleep": _log_before_sleep(call),
        "reraise": True,
    }


def retrying(
    call: str, max_retries: int, wait: BackoffWait | None = None, *, deadline: float | None = None
) -> Retrying:
    """
    Build a synchronous tenacity controller for one idempotent call.

    :param call: a short name of the call, for the log (``status``, ``result``...).
    :param max_retries: how many times to repeat after the first attempt.
    :param wait: the delay policy (defaults to :class:`BackoffWait`).
    :param deadline: epoch seconds; a retry whose wait would end after it is not made (the last error is
        raised instead). ``None``: no deadline.
    """
    return Retrying(**_common(call, max_retries, wait, deadline))


def async_retrying(
    call: str, max_retries: int, wait: BackoffWait | None = None, *, deadline: float | None = None
) -> AsyncRetrying:
    """
    Build an asyncio tenacity controller for one idempotent call (sleeps with ``asyncio.sleep``).

    :param call: a short name of the call, for the log.
    :param max_retries: how many times to repeat after the first attempt.
    :param wait: the delay policy (defaults to :class:`BackoffWait`).
    :param deadline: epoch seconds; a retry whose wait would end after it is not made. ``None``: none.
    """
    return AsyncRetrying(**_common(call, max_retries, wait, deadline))
