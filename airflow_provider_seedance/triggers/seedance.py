"""Trigger that waits for a Seedance generation request in the triggerer, without holding a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import TaskInstanceState
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_seedance._state_log import log_state
from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceError
from airflow_provider_seedance.hooks.seedance import DEFAULT_CONN_ID, SeedanceHook, check_request_id
from airflow_provider_seedance.lifecycle import (
    DEFAULT_POLL_INTERVAL_SECONDS,
    RequestTracker,
    await_request,
    finite_seconds,
    positive_seconds,
)
from airflow_provider_seedance.models import SeedanceTriggerEvent


class SeedanceRequestTrigger(BaseTrigger):
    """
    Poll a Seedance request until it ends or its deadline passes, then yield exactly one event.

    The event payload is ``SeedanceTriggerEvent``: ``{"status", "request_id", "result", "message"}`` with
    ``status`` one of ``succeeded``, ``failed``, ``cancelled``, ``timeout`` or ``error``. Each poll makes one
    status GET; the result GET happens only once the run is over. Transient API failures (already retried by
    the hook) are logged and polling goes on until the deadline; permanent ones (bad token, unknown request)
    end the wait with an ``error`` event, except a 404 within
    :data:`~airflow_provider_seedance.lifecycle.NOT_FOUND_GRACE_SECONDS` of ``submitted_at`` (or of the run
    being seen finished), which is the API's read-after-write lag. The trigger only reads: it never
    submits, and cancels nothing unless ``cancel_on_kill`` is set, and then only in :meth:`on_kill`, when a
    user kills the deferred task.

    :param request_id: the request to wait for.
    :param seedance_conn_id: the ``seedance`` connection.
    :param poll_interval: seconds between two status reads.
    :param end_time: deadline, epoch seconds; ``None`` waits until the request ends.
    :param cancel_on_kill: cancel the request (best effort) when a user kills the deferred task. Set by the
        operators, which own the request they submitted; off by default and for the sensor, which waits for
        a request someone else paid for. Kwargs serialised before this argument existed rebuild with it off.
    :param submitted_at: when the request was submitted, epoch seconds (``None``: unknown, so a 404 before
        the run is seen finished means the request is gone).
    """

    def __init__(
        self,
        request_id: str,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        end_time: float | None = None,
        cancel_on_kill: bool = False,
        submitted_at: float | None = None,
    ) -> None:
        super().__init__()
        # Fail in the worker, at defer time, rather than in the triggerer after a round trip through the DB.
        self.request_id = check_request_id(request_id)
        if not isinstance(seedance_conn_id, str) or not seedance_conn_id:
            raise SeedanceConfigurationError(
                f"seedance_conn_id must be a non-empty string, got {seedance_conn_id!r}"
            )
        self.seedance_conn_id = seedance_conn_id
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.end_time = None if end_time is None else finite_seconds(end_time, "end_time")
        if not isinstance(cancel_on_kill, bool):
            raise SeedanceConfigurationError(f"cancel_on_kill must be True or False, got {cancel_on_kill!r}")
        self.cancel_on_kill = cancel_on_kill
        self.submitted_at = None if submitted_at is None else finite_seconds(submitted_at, "submitted_at")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the classpath and the kwargs that rebuild this trigger: ids and timings, never secrets."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "seedance_conn_id": self.seedance_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "cancel_on_kill": self.cancel_on_kill,
                "submitted_at": self.submitted_at,
            },
        )

    @cached_property
    def hook(self) -> SeedanceHook:
        """The hook, built on first use inside the triggerer (never at construction or serialisation)."""
        return SeedanceHook(seedance_conn_id=self.seedance_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the request ends or the deadline passes; yield one JSON-serialisable event."""
        tracker = RequestTracker(self.request_id, self.log, submitted_at=self.submitted_at)
        try:
            outcome = await await_request(
                self.hook, tracker, end_time=self.end_time, poll_interval=self.poll_interval
            )
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
        log_state(self.log, outcome.status, outcome.request_id, "%s", outcome.message)
        yield TriggerEvent(outcome.model_dump(mode="json"))

    async def on_kill(self) -> None:
        """
        With ``cancel_on_kill``, cancel the request when a user kills the deferred task. Best effort.

        Airflow 3.3 calls this on mark failed/success and clear. Only queued requests can be cancelled; a
        running one goes on and is billed. Without ``cancel_on_kill`` (the sensor's trigger) the request is
        left alone: its owner decides.

        Airflow 3.3.2 also calls it on a triggerer that lost the trigger to another one (its heartbeat was
        late, or two triggerers picked the same trigger up at once): it cancels every trigger no longer
        assigned to it as a "user action". The task is then still deferred, waiting for the copy the other
        triggerer runs, so the request is cancelled only once Airflow says the task left the deferred
        state (or cannot say).
        """
        if not self.cancel_on_kill:
            self.log.info(
                "Deferred task killed: leaving Seedance request %s alone (this wait does not own it)",
                self.request_id,
            )
            return
        state = await self._task_state()
        if state == TaskInstanceState.DEFERRED:
            self.log.info(
                "This triggerer stopped waiting for Seedance request %s, but its task is still deferred (the "
                "trigger moved to another triggerer): not cancelling it",
                self.request_id,
            )
            return
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

    async def _task_state(self) -> str | None:
        """Return the current state of the task instance this trigger serves, or ``None`` if unknown."""
        ti = getattr(self, "task_instance", None)  # set by the triggerer; absent when run on its own
        if ti is None:
            return None
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        map_index = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        try:
            # The supervisor channel is blocking: a worker thread keeps the event loop free.
            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id, map_index=map_index, task_ids=[ti.task_id], run_ids=[ti.run_id]
            )
        except Exception as exc:
            self.log.warning(
                "Could not read the state of the task waiting for Seedance request %s (%s: %s); taking the "
                "kill as a user's",
                self.request_id,
                type(exc).__name__,
                exc,
            )
            return None
        key = ti.task_id if map_index is None else f"{ti.task_id}_{map_index}"
        state = states.get(ti.run_id, {}).get(key)
        return None if state is None else str(state)


__all__ = ["SeedanceRequestTrigger"]
