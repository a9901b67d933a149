"""Trigger that waits for a Seedance generation request in the triggerer, without holding a worker slot."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceError
from airflow_provider_seedance.hooks.seedance import DEFAULT_CONN_ID, SeedanceHook, check_request_id
from airflow_provider_seedance.models import SeedanceTriggerEvent
from airflow_provider_seedance.operators._lifecycle import (
    DEFAULT_POLL_INTERVAL_SECONDS,
    RequestTracker,
    apoll_once,
    next_sleep,
    seconds_left,
)


class SeedanceRequestTrigger(BaseTrigger):
    """
    Poll a Seedance request until it ends or its deadline passes, then yield exactly one event.

    The event payload is ``SeedanceTriggerEvent``: ``{"status", "request_id", "result", "message"}`` with
    ``status`` one of ``succeeded``, ``failed``, ``cancelled``, ``timeout`` or ``error``. Each poll makes one
    status GET; the result GET happens only once the run is over. Transient API failures (already retried by
    the hook) are logged and polling goes on until the deadline; permanent ones (bad token, unknown request)
    end the wait with an ``error`` event. The trigger only reads: it never submits, and cancels the request
    only in :meth:`on_kill`, when a user kills the deferred task.

    :param request_id: the request to wait for.
    :param seedance_conn_id: the ``seedance`` connection.
    :param poll_interval: seconds between two status reads.
    :param end_time: deadline, epoch seconds; ``None`` waits until the request ends.
    """

    def __init__(
        self,
        request_id: str,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        end_time: float | None = None,
    ) -> None:
        super().__init__()
        # Fail in the worker, at defer time, rather than in the triggerer after a round trip through the DB.
        self.request_id = check_request_id(request_id)
        if not isinstance(seedance_conn_id, str) or not seedance_conn_id:
            raise SeedanceConfigurationError(
                f"seedance_conn_id must be a non-empty string, got {seedance_conn_id!r}"
            )
        self.seedance_conn_id = seedance_conn_id
        self.poll_interval = _positive_seconds(poll_interval, "poll_interval")
        self.end_time = None if end_time is None else _finite_seconds(end_time, "end_time")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the kwargs that rebuild this trigger: ids and timings only, never secrets."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "seedance_conn_id": self.seedance_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    @cached_property
    def hook(self) -> SeedanceHook:
        """The hook, built on first use inside the triggerer (never at construction or serialisation)."""
        return SeedanceHook(seedance_conn_id=self.seedance_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the request ends or the deadline passes; yield one JSON-serialisable event."""
        tracker = RequestTracker(self.request_id, self.log)
        try:
            while True:
                outcome = await apoll_once(self.hook, tracker)
                if outcome is None and self.end_time is not None:
                    left = seconds_left(self.end_time)
                    if left is not None and left <= 0:
                        outcome = tracker.timed_out(self.end_time)
                if outcome is not None:
                    break
                await asyncio.sleep(next_sleep(self.poll_interval, self.end_time, self.request_id))
        except Exception as exc:
            # API errors already became outcomes; this is a bug or an environment problem. An error event
            # fails the task with a readable message (a crashed trigger would only say "trigger failure").
            self.log.exception("Seedance trigger for request %s failed unexpectedly", self.request_id)
            outcome = SeedanceTriggerEvent(
                status="error",
                request_id=self.request_id,
                message=f"Waiting for Seedance request {self.request_id} failed unexpectedly: "
                f"{type(exc).__name__}: {exc}",
            )
        self.log.info("%s", outcome.message)
        yield TriggerEvent(outcome.model_dump(mode="json"))

    async def on_kill(self) -> None:
        """
        Cancel the request when a user kills the deferred task (mark failed/success, clear). Best effort.

        Only queued requests can be cancelled; a running one goes on and is billed. Never called on a
        triggerer restart or hand-over, which is why cancelling lives here and not in ``cleanup()``.
        """
        try:
            outcome = await self.hook.acancel(self.request_id)
        except SeedanceError as exc:
            self.log.warning("Could not cancel Seedance request %s: %s", self.request_id, exc)
            return
        if outcome.cancelled:
            self.log.info("Cancelled Seedance request %s (it was still queued)", self.request_id)
        else:
            self.log.info(
                "Seedance request %s could not be cancelled (outcome %r): only queued requests can be; "
                "it will finish and be billed",
                self.request_id,
                outcome.outcome,
            )


def _positive_seconds(value: object, name: str) -> float:
    number = _finite_seconds(value, name)
    if number <= 0:
        raise SeedanceConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def _finite_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SeedanceConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


__all__ = ["SeedanceRequestTrigger"]
