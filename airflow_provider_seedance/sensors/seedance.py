"""Sensor that waits for a Seedance request submitted elsewhere (another DAG, a notebook, a script)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_seedance.hooks.seedance import DEFAULT_CONN_ID, SeedanceHook, check_request_id
from airflow_provider_seedance.lifecycle import (
    DEFAULT_POLL_INTERVAL_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    DEFER_TIMEOUT_GRACE_SECONDS,
    RequestTracker,
    default_deferrable,
    finish_event,
    poll_once,
    positive_seconds,
)
from airflow_provider_seedance.links.seedance import SeedanceVideoLink, remember_video_url
from airflow_provider_seedance.models import SeedanceTriggerEvent
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from airflow_provider_seedance.version_compat import resume_sensor

if TYPE_CHECKING:
    from airflow.sdk import Context


class SeedanceRequestSensor(BaseSensorOperator):
    """
    Wait for a Seedance generation request to end and return the same dict as the operators.

    Succeeds with ``{"request_id", "model_id": None, "status": "succeeded", "video_url", "video_urls",
    "image_urls", "output", "cost"}``; fails with the API's error text when the request failed, was
    cancelled, is unknown to the API or reports a status this provider does not know. The sensor does not
    own the request: it never cancels it, not even when it times out or when a user kills it while deferred.
    A failure is handled by ``BaseSensorOperator`` (``soft_fail``, ``never_fail``) the same way whether it is
    met by the check before deferring or after the trigger fired.

    :param request_id: the request to wait for (templated), e.g.
        ``"{{ ti.xcom_pull('generate', key='request_id') }}"``.
    :param seedance_conn_id: the ``seedance`` connection (templated).
    :param deferrable: wait in the triggerer. ``None``: ``[operators] default_deferrable`` when the
        deployment sets it, else ``True``.
    :param poll_interval: seconds between two status reads (the sensor's ``poke_interval``).
    :param timeout: seconds to wait before failing with ``AirflowSensorTimeout``.
    """

    template_fields: Sequence[str] = ("request_id", "seedance_conn_id")
    operator_extra_links = (SeedanceVideoLink(),)
    ui_color = "#fde7e9"

    def __init__(
        self,
        *,
        request_id: str,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        timeout: float | timedelta = DEFAULT_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", positive_seconds(poll_interval, "poll_interval"))
        # Deferring adds the timeout to the current date: an endless or absurd one would overflow there.
        # (0 stays Airflow's to judge; other shapes get BaseSensorOperator's own error.)
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds != 0:
            positive_seconds(seconds, "timeout")
        super().__init__(timeout=timeout, **kwargs)
        self.request_id = request_id
        self.seedance_conn_id = seedance_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_interval = positive_seconds(self.poke_interval, "poll_interval")
        self._tracker: RequestTracker | None = None

    @cached_property
    def hook(self) -> SeedanceHook:
        """The hook for ``seedance_conn_id`` (built after templating)."""
        return SeedanceHook(seedance_conn_id=self.seedance_conn_id)

    def _tracker_for(self, request_id: str) -> RequestTracker:
        # One tracker across pokes, so only state changes are logged.
        if self._tracker is None or self._tracker.request_id != request_id:
            self._tracker = RequestTracker(request_id, self.log)
        return self._tracker

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """
        Read the request once; done with its result when it succeeded, raise when it ended otherwise.

        :param context: the task context.
        """
        remember_video_url(self, None)
        request_id = check_request_id(self.request_id)
        outcome = poll_once(self.hook, self._tracker_for(request_id))
        if outcome is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(outcome))

    def _finish(self, outcome: SeedanceTriggerEvent) -> dict[str, Any]:
        result = finish_event(outcome, model_id=None, log=self.log)
        remember_video_url(self, result["video_url"])
        return result

    def execute(self, context: Context) -> Any:
        """
        Poke in the worker, or check once and defer to the triggerer when ``deferrable``.

        :param context: the task context.
        """
        if not self.deferrable:
            return super().execute(context)
        # BaseSensorOperator applies soft_fail/never_fail to what a resumed sensor raises: running the first
        # check through the same entry point gives a failure the same outcome before and after deferral.
        return self.resume_execution("check_then_defer", None, context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """
        Run ``next_method`` with ``BaseSensorOperator``'s failure handling (``soft_fail``, ``never_fail``).

        :param next_method: the method to run.
        :param next_kwargs: its keyword arguments (the trigger's event).
        :param context: the task context.
        """
        resume = partial(super().resume_execution, next_method, next_kwargs, context)
        return resume_sensor(self, resume)

    def check_then_defer(self, context: Context) -> Any:
        """
        Check the request once; return its result when it is over, else defer to the trigger.

        :param context: the task context.
        """
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        self.defer(
            trigger=SeedanceRequestTrigger(
                request_id=self.request_id,
                seedance_conn_id=self.seedance_conn_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + self.timeout,
                # Not this sensor's request: killing the wait must not cancel what another task paid for.
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """
        Resume after the trigger fired: return the result, or fail (``AirflowSensorTimeout`` on timeout).

        :param context: the task context.
        :param event: the trigger's event payload.
        """
        remember_video_url(self, None)
        parsed = SeedanceTriggerEvent.parse(event, expected_request_id=self.request_id)
        if parsed.status == "timeout":
            from airflow.providers.common.compat.sdk import AirflowSensorTimeout

            raise AirflowSensorTimeout(f"{parsed.message} The sensor's timeout is {self.timeout:g} s.")
        return self._finish(parsed)


__all__ = ["SeedanceRequestSensor"]
