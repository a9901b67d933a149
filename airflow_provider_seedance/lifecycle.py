"""The life of one generation request, shared by the operators, the sensor and the trigger.

This module sits below all three (it imports only the hook and the models), so the trigger and the sensor
need nothing from ``operators/``.

One place per policy:

* :class:`RequestTracker` turns /status and /result answers (and API errors) into the single
  :class:`~airflow_provider_seedance.models.SeedanceTriggerEvent` that ends a wait, and logs state changes
  (queue position, running), not every poll.
* :func:`check_request` / :func:`acheck_request` read a request once (one status GET, and the result GET
  only when the status says the run is over); :func:`poll_once` / :func:`apoll_once` do the same but turn
  API errors into outcomes (transient: keep polling; permanent: an ``error`` event).
* :func:`wait_for_request` is the worker-side poll loop (operator sync mode); :func:`await_request` is its
  async twin, run by the trigger in the triggerer.
* :func:`finish_event` turns an outcome into the operators' return value, or the exception that fails the
  task (cancelling a request that hit its deadline while still queued).
* :func:`positive_seconds` / :func:`finite_seconds` are the one rule for the timing arguments (intervals,
  timeouts, deadlines) of the operators, the sensor and the trigger.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from configparser import ConfigParser
from datetime import datetime, timezone
from typing import Any, Protocol

from airflow_provider_seedance._state_log import log_state
from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceError,
    SeedanceNotFoundError,
    SeedanceRequestFailedError,
    SeedanceTimeoutError,
    SeedanceTransientError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import (
    RequestStatus,
    ResultResponse,
    SeedanceTriggerEvent,
    StatusResponse,
    build_generation_result,
    output_image_urls,
    output_video_urls,
)

DEFAULT_POLL_INTERVAL_SECONDS = 10.0
"""Seconds between two status reads (RunComfy's own clients poll every 2-5 s; a video takes minutes)."""

DEFAULT_TIMEOUT_SECONDS = 3600.0
"""Deadline of a whole generation, in seconds from submission (or from re-attaching to a request)."""

DEFER_TIMEOUT_GRACE_SECONDS = 120.0
"""The deferral timeout is a backstop set this long after the trigger's own deadline."""

INCLUDE_COST = True
"""Ask /result for the run's cost, so the return value's ``cost`` is filled when the API reports it."""

NOT_FOUND_GRACE_SECONDS = 120.0
"""
How long a 404 ("not found") is read as the API's read-after-write lag rather than "gone", in seconds.

Counted from the submit (when the follower knows it: the operators pass it, and store it for their retries)
and from the moment /status first says the run is over (for the /result read that follows). APIs with
read-after-write lag answer 404 for a few seconds after accepting a request; a request accepted two minutes
ago cannot have expired. After the grace, a 404 means unknown, deleted or expired.
"""


class TaskLogger(Protocol):
    """The logging calls this module makes (met by ``logging.Logger`` and Airflow's structlog loggers)."""

    def debug(self, msg: str, /, *args: Any) -> Any:
        """Log at DEBUG."""

    def info(self, msg: str, /, *args: Any) -> Any:
        """Log at INFO."""

    def warning(self, msg: str, /, *args: Any) -> Any:
        """Log at WARNING."""

    def error(self, msg: str, /, *args: Any) -> Any:
        """Log at ERROR."""


def default_deferrable() -> bool:
    """
    Return ``[operators] default_deferrable`` when the deployment chose a value, else ``True``.

    Airflow's built-in default for that option is ``False``, and Airflow 3 writes every option, that one
    included, into the ``airflow.cfg`` it creates on first start. A plain ``conf.getboolean`` would therefore
    never let a long video generation free its worker slot unless every deployment opted in. So the option
    counts as chosen when it is set in the environment (``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE``, or its
    ``_CMD`` / ``_SECRET`` forms), or when ``airflow.cfg`` holds a value other than Airflow's built-in
    default; a file that only repeats the default keeps this provider's default, deferrable.
    """
    from airflow.providers.common.compat.sdk import conf

    prefix = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"
    if any(name in os.environ for name in (prefix, f"{prefix}_CMD", f"{prefix}_SECRET")):
        return conf.getboolean("operators", "default_deferrable", fallback=True)
    # ConfigParser.has_option looks at the parsed airflow.cfg only, not at Airflow's built-in defaults.
    if ConfigParser.has_option(conf, "operators", "default_deferrable"):
        value = conf.getboolean("operators", "default_deferrable", fallback=True)
        if value != _airflow_default_deferrable(conf):
            return value
    return True


def _airflow_default_deferrable(conf: Any) -> bool:
    """
    Return Airflow's built-in default for ``[operators] default_deferrable`` (``False`` in every 3.x).

    :param conf: Airflow's configuration object.
    """
    getter = getattr(conf, "get_default_value", None)
    raw = getter("operators", "default_deferrable", fallback="false") if getter else "false"
    return str(raw).strip().lower() in {"true", "t", "1"}


MAX_WAIT_SECONDS = 365 * 24 * 3600.0
"""The longest ``timeout`` or ``poll_interval`` accepted (a year): far beyond any generation, well inside
what dates and sleeps can hold."""


def finite_seconds(value: object, name: str) -> float:
    """
    Return ``value`` as a float when it is a finite number of seconds (not a bool); raise otherwise.

    :param value: the value given.
    :param name: the argument's name, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SeedanceConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


def positive_seconds(value: object, name: str) -> float:
    """
    Return ``value`` as a float when it is a positive number of seconds up to a year; raise otherwise.

    Infinity is refused: an endless timeout cannot become a deadline (epoch seconds) nor a deferral timeout.
    So is anything above :data:`MAX_WAIT_SECONDS`: Airflow adds a deferral's timeout to the current date,
    which overflows past the year 9999, and a thread cannot sleep that long either. That failure would come
    after the submit, on every retry.

    :param value: the value given.
    :param name: the argument's name, for the message.
    """
    number = finite_seconds(value, name)
    if number <= 0:
        raise SeedanceConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    if number > MAX_WAIT_SECONDS:
        raise SeedanceConfigurationError(
            f"{name} must be at most {MAX_WAIT_SECONDS:.0f} seconds (365 days), got {value!r}"
        )
    return number


def format_deadline(end_time: float) -> str:
    """
    Render an epoch deadline for messages.

    :param end_time: the deadline, epoch seconds.
    """
    return datetime.fromtimestamp(end_time, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class RequestTracker:
    """
    Follow one request: interpret each answer with the shared status policy and log only state changes.

    :param request_id: the request followed.
    :param log: where state changes are logged (the task's or the trigger's logger).
    :param submitted_at: when the request was submitted (epoch seconds), when known: a 404 within
        :data:`NOT_FOUND_GRACE_SECONDS` of it is read-after-write lag, not "gone". ``None`` (a request
        submitted elsewhere): a 404 before the run is seen finished means gone.
    """

    def __init__(self, request_id: str, log: TaskLogger, *, submitted_at: float | None = None) -> None:
        self.request_id = request_id
        self.log = log
        # A clock ahead of this one (another worker, the triggerer) must not stretch the grace.
        self.submitted_at = None if submitted_at is None else min(submitted_at, time.time())
        self.last_status: str | None = None
        self._last_seen: tuple[RequestStatus, int | None] | None = None
        self._finished_seen_at: float | None = None
        self._lag_logged = False

    # -- status -------------------------------------------------------------------------------------

    def observe_status(self, status: StatusResponse) -> bool:
        """
        Record a /status answer and say whether /result must now be read (the run is no longer active).

        :param status: the /status answer.
        """
        state = status.state
        self.last_status = status.status
        seen = (state, status.queue_position if state is RequestStatus.IN_QUEUE else None)
        if seen != self._last_seen:
            self._last_seen = seen
            self._log_state(state, status)
        over = not state.is_active()
        if over and self._finished_seen_at is None:
            self._finished_seen_at = time.time()
        return over

    def _log_state(self, state: RequestStatus, status: StatusResponse) -> None:
        rid = self.request_id
        if state is RequestStatus.IN_QUEUE:
            if status.queue_position is None:
                log_state(self.log, "queued", rid, "Seedance request %s is queued", rid)
            else:
                log_state(
                    self.log,
                    "queued",
                    rid,
                    "Seedance request %s is queued at position %d",
                    rid,
                    status.queue_position,
                    queue_position=status.queue_position,
                )
        elif state is RequestStatus.IN_PROGRESS:
            log_state(self.log, "generating", rid, "Seedance request %s is generating", rid)
        elif state is RequestStatus.UNKNOWN:
            # Never taken as success: /result has the final word.
            self.log.warning(
                "Seedance request %s reports an unfamiliar status %r; reading its result to find out more",
                rid,
                status.status,
            )
        else:
            self.log.info("Seedance request %s finished (status %s); reading its result", rid, status.status)

    # -- result -------------------------------------------------------------------------------------

    def outcome_from_result(self, result: ResultResponse) -> SeedanceTriggerEvent | None:
        """
        Turn a /result answer into the outcome, or ``None`` while the run is still going.

        /result is the final word: ``succeeded`` (or ``completed`` with an output) is success, ``failed``
        (or ``completed`` with an error) is failure, ``cancelled`` is cancellation, queued or running means
        "keep polling", and anything else is an error, never a success.

        :param result: the /result answer.
        """
        rid = self.request_id
        state = result.state
        self.last_status = result.status
        error_text = result.error_text
        if result.succeeded:
            videos = output_video_urls(result.output)
            images = output_image_urls(result.output)
            if videos:
                message = f"Seedance request {rid} succeeded with {len(videos)} video(s)."
            else:
                message = (
                    f"Seedance request {rid} succeeded, but its output holds no video URL "
                    f"({len(images)} image URL(s), output keys: {sorted(result.output or {})})."
                )
            return self._event("succeeded", message, result)
        if state is RequestStatus.FAILED or (state is RequestStatus.COMPLETED and error_text):
            reason = error_text or "the API gave no reason"
            return self._event("failed", f"Seedance request {rid} failed: {reason}", result)
        if state is RequestStatus.CANCELLED:
            suffix = f": {error_text}" if error_text else "."
            return self._event("cancelled", f"Seedance request {rid} was cancelled{suffix}", result)
        if state.is_active():
            # /status and /result can disagree for a moment right after the run ends.
            self.log.debug("Seedance request %s: result not ready yet (%s)", rid, result.status)
            return None
        return self._event(
            "error",
            f"Seedance request {rid} ended with a status this provider does not know "
            f"({result.status!r}, output present: {bool(result.output)}); not treating it as success.",
            result,
        )

    # -- errors and deadline ------------------------------------------------------------------------

    def not_found_grace_left(self) -> float:
        """
        Return the seconds left during which a 404 is read-after-write lag (0 once it means "gone").

        The grace runs from the submit, when known, and from the first /status that said the run is over.
        """
        marks = [mark for mark in (self.submitted_at, self._finished_seen_at) if mark is not None]
        if not marks:
            return 0.0
        return max(0.0, max(marks) + NOT_FOUND_GRACE_SECONDS - time.time())

    def outcome_from_error(self, exc: SeedanceError) -> SeedanceTriggerEvent | None:
        """
        Turn an API error into an outcome: ``None`` (keep polling) when transient, else an ``error`` event.

        The hook has already retried the call; a transient error that outlasted those retries is an outage
        the wait may still outlive before its deadline.

        :param exc: the error the hook raised.
        """
        if isinstance(exc, SeedanceTransientError):
            self.log.warning(
                "Seedance request %s: could not read its state (%s); trying again at the next poll",
                self.request_id,
                exc,
            )
            return None
        if isinstance(exc, SeedanceNotFoundError) and self.not_found_grace_left() > 0:
            self._log_lag()
            return None
        if isinstance(exc, SeedanceNotFoundError):
            message = (
                f"Seedance request {self.request_id} was not found by the API: it is unknown, was deleted or "
                f"has expired, or belongs to another account. ({exc})"
            )
        else:
            message = f"Seedance request {self.request_id} could not be followed: {exc}"
        return self._event("error", message, None)

    def _log_lag(self) -> None:
        # Once at WARNING: a lag that lasts shows as DEBUG lines, not one warning per poll.
        log = self.log.debug if self._lag_logged else self.log.warning
        self._lag_logged = True
        log(
            "Seedance request %s is not found by the API yet; taking it as read-after-write lag for "
            "another %.0f s (a request just submitted or just finished cannot have expired)",
            self.request_id,
            self.not_found_grace_left(),
        )

    def timed_out(self, end_time: float) -> SeedanceTriggerEvent:
        """
        Build the ``timeout`` outcome for a request that was still going at its deadline.

        :param end_time: the deadline that passed, epoch seconds.
        """
        last = f" (last status: {self.last_status})" if self.last_status else ""
        return self._event(
            "timeout",
            f"Seedance request {self.request_id} did not finish before its deadline "
            f"{format_deadline(end_time)}{last}.",
            None,
        )

    def _event(self, status: Any, message: str, result: ResultResponse | None) -> SeedanceTriggerEvent:
        return SeedanceTriggerEvent(
            status=status,
            request_id=self.request_id,
            result=result.model_dump(mode="json") if result is not None else None,
            message=message,
        )


# ---------------------------------------------------------------------------------------------------------
# One read of a request: sync and async twins
# ---------------------------------------------------------------------------------------------------------


def check_request(hook: SeedanceHook, tracker: RequestTracker) -> SeedanceTriggerEvent | None:
    """
    Read a request once: one status GET, plus the result GET when the run is over. API errors propagate.

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    """
    status = hook.get_status(tracker.request_id)
    if not tracker.observe_status(status):
        return None
    return tracker.outcome_from_result(hook.get_result(tracker.request_id, include_cost=INCLUDE_COST))


async def acheck_request(hook: SeedanceHook, tracker: RequestTracker) -> SeedanceTriggerEvent | None:
    """
    Read a request once without blocking the event loop (async twin of :func:`check_request`).

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    """
    status = await hook.aget_status(tracker.request_id)
    if not tracker.observe_status(status):
        return None
    return tracker.outcome_from_result(await hook.aget_result(tracker.request_id, include_cost=INCLUDE_COST))


def poll_once(hook: SeedanceHook, tracker: RequestTracker) -> SeedanceTriggerEvent | None:
    """
    Read a request once, turning API errors into outcomes (``None`` for transient ones).

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    """
    try:
        return check_request(hook, tracker)
    except SeedanceError as exc:
        return tracker.outcome_from_error(exc)


async def apoll_once(hook: SeedanceHook, tracker: RequestTracker) -> SeedanceTriggerEvent | None:
    """
    Read a request once without blocking, turning API errors into outcomes (async twin of :func:`poll_once`).

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    """
    try:
        return await acheck_request(hook, tracker)
    except SeedanceError as exc:
        return tracker.outcome_from_error(exc)


def seconds_left(end_time: float | None) -> float | None:
    """
    Return the seconds until ``end_time`` (negative once passed), or ``None`` without a deadline.

    :param end_time: the deadline, epoch seconds, or ``None``.
    """
    return None if end_time is None else end_time - time.time()


def poll_phase(request_id: str, poll_interval: float) -> float:
    """
    Return the request's own offset in ``[0, poll_interval)``: a hash of its id, so it never changes.

    :param request_id: the request polled.
    :param poll_interval: the poll interval, seconds.
    """
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * poll_interval


def next_sleep(poll_interval: float, end_time: float | None, request_id: str | None = None) -> float:
    """
    Return how long to wait before the next poll, shortened to end exactly at the deadline.

    With a ``request_id``, polls fall on the request's own slots of the wall clock, every ``poll_interval``
    from :func:`poll_phase`: the wait is in ``(0, poll_interval]``, so detection is never later than with a
    plain interval, but requests submitted in the same second (a mapped fan-out) or resumed together (a
    triggerer restart) poll spread evenly over the interval instead of in lockstep, for as long as they run,
    and a poll that ran long does not push every later poll of that request back.

    :param poll_interval: the configured interval, seconds.
    :param end_time: the deadline, epoch seconds, or ``None``.
    :param request_id: the request polled; ``None`` waits exactly ``poll_interval``.
    """
    wait = poll_interval
    if request_id is not None:
        wait = (poll_phase(request_id, poll_interval) - time.time()) % poll_interval or poll_interval
    left = seconds_left(end_time)
    return wait if left is None else max(0.0, min(wait, left))


def wait_for_request(
    hook: SeedanceHook,
    tracker: RequestTracker,
    *,
    end_time: float | None,
    poll_interval: float,
    sleep: Callable[[float], None] = time.sleep,
) -> SeedanceTriggerEvent:
    """
    Poll a request in the worker until it ends or the deadline passes; return the outcome.

    The request is read once more after the deadline has passed before giving up on it, so a run that
    finished during the last interval is not reported as timed out.

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    :param end_time: the deadline, epoch seconds (``None``: no deadline).
    :param poll_interval: seconds between two status reads.
    :param sleep: the sleep function (tests pass a fake clock).
    """
    while True:
        event = poll_once(hook, tracker)
        if event is not None:
            return event
        left = seconds_left(end_time)
        if end_time is not None and left is not None and left <= 0:
            return tracker.timed_out(end_time)
        sleep(next_sleep(poll_interval, end_time, tracker.request_id))


async def await_request(
    hook: SeedanceHook,
    tracker: RequestTracker,
    *,
    end_time: float | None,
    poll_interval: float,
) -> SeedanceTriggerEvent:
    """
    Poll a request in the triggerer until it ends or the deadline passes; return the outcome.

    The async twin of :func:`wait_for_request`: it never blocks the event loop, and it too reads the request
    once more after the deadline before giving up on it.

    :param hook: the hook to call.
    :param tracker: the tracker of the request.
    :param end_time: the deadline, epoch seconds (``None``: no deadline).
    :param poll_interval: seconds between two status reads.
    """
    while True:
        event = await apoll_once(hook, tracker)
        if event is not None:
            return event
        left = seconds_left(end_time)
        if end_time is not None and left is not None and left <= 0:
            return tracker.timed_out(end_time)
        await asyncio.sleep(next_sleep(poll_interval, end_time, tracker.request_id))


# ---------------------------------------------------------------------------------------------------------
# The end of a wait: return value or failure
# ---------------------------------------------------------------------------------------------------------


def cancel_quietly(hook: SeedanceHook, request_id: str, log: TaskLogger) -> str:
    """
    Ask the API to cancel a request (best effort) and describe what happened; never raises API errors.

    Only queued requests can be cancelled: a running one goes on and is billed.

    :param hook: the hook to call.
    :param request_id: the request to cancel.
    :param log: where a failure to cancel is logged.
    """
    try:
        outcome = hook.cancel(request_id)
    except SeedanceError as exc:
        log.warning("Could not cancel Seedance request %s: %s", request_id, exc)
        return f"Cancelling it failed ({exc}); check it in your RunComfy request history."
    if outcome.cancelled:
        return "It was still queued and has been cancelled (nothing is billed for it)."
    return (
        f"It could not be cancelled (outcome {outcome.outcome!r}): only queued requests can be; "
        f"a running one finishes and is billed."
    )


def finish_event(
    event: SeedanceTriggerEvent,
    *,
    model_id: str | None,
    log: TaskLogger,
    hook: SeedanceHook | None = None,
) -> dict[str, Any]:
    """
    Return the operators' and sensor's result for a ``succeeded`` outcome; raise for every other one.

    :param event: the outcome of the wait.
    :param model_id: the model that ran the request (``None`` when unknown).
    :param log: the task's logger.
    :param hook: when given, a request that timed out is cancelled through it (best effort); the sensor
        passes none, since it does not own the request it watches.
    """
    rid = event.request_id
    if event.status == "succeeded":
        if event.result is None:
            raise SeedanceRequestFailedError(
                f"Seedance request {rid} was reported as succeeded without its result; cannot build the "
                f"task's return value.",
                request_id=rid,
                status="error",
            )
        result = build_generation_result(request_id=rid, model_id=model_id, result=event.result)
        if result["video_url"] is None:
            log_state(log, "succeeded", rid, "%s", event.message, level=logging.WARNING)
        else:
            log_state(log, "succeeded", rid, "Seedance request %s succeeded: %s", rid, result["video_url"])
        return result
    if event.status == "timeout":
        parts = [event.message]
        if hook is not None:
            parts.append(cancel_quietly(hook, rid, log))
        parts.append("Raise the task's `timeout` if generations need longer.")
        raise SeedanceTimeoutError(" ".join(parts), request_id=rid, status="timeout")
    raise SeedanceRequestFailedError(
        event.message or f"Seedance request {rid} ended with status {event.status!r}.",
        request_id=rid,
        status=event.status,
    )


__all__ = [
    "DEFAULT_POLL_INTERVAL_SECONDS",
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFER_TIMEOUT_GRACE_SECONDS",
    "NOT_FOUND_GRACE_SECONDS",
    "RequestTracker",
    "acheck_request",
    "apoll_once",
    "await_request",
    "cancel_quietly",
    "check_request",
    "default_deferrable",
    "finish_event",
    "finite_seconds",
    "next_sleep",
    "poll_once",
    "poll_phase",
    "positive_seconds",
    "seconds_left",
    "wait_for_request",
]
