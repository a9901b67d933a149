"""Operators that generate videos with ByteDance Seedance on the RunComfy Model API.

``SeedanceSubmitOperator`` takes any RunComfy model id and a free-form ``input`` dict;
``SeedanceImageToVideoOperator`` takes the typed fields of Seedance 1.5 Pro image-to-video. Both share
:class:`SeedanceBaseOperator`, which owns the lifecycle:

1. build and validate the request body (after templating, before any HTTP call);
2. read the request id an earlier try stored (``durable=True``) and re-attach to that request when it is
   still queued or running, or use its result when it succeeded; otherwise submit, and store the new id at
   once (Airflow 3.3 ``task_state_store``; an Airflow Variable on 3.0-3.2);
3. push XCom ``request_id``; return right away when ``wait_for_completion=False``;
4. read the status once (finish without deferring when already over), then defer to
   :class:`~airflow_provider_seedance.triggers.seedance.SeedanceRequestTrigger` or poll in the worker, both
   bounded by the ``timeout`` deadline;
5. return the SPEC dict on success; fail with the API's error text otherwise, cancelling a request still
   queued at the deadline.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowTaskTimeout
from airflow.sdk import BaseOperator

from airflow_provider_seedance import cost
from airflow_provider_seedance.catalog import (
    SEEDANCE_2_PRO_MODEL_ID,
    Seedance2ProInput,
    validate_request_body,
)
from airflow_provider_seedance.exceptions import (
    AirflowFailException,
    SeedanceConfigurationError,
    SeedanceError,
    SeedanceInputError,
    SeedanceNotFoundError,
    SeedanceRequestFailedError,
    SeedanceRequestNotStoredError,
    SeedanceSubmissionStateUnknownError,
    SeedanceTimeoutError,
    SeedanceTransientError,
)
from airflow_provider_seedance.get_provider_info import DEFAULT_BASE_URL
from airflow_provider_seedance.hooks.seedance import (
    DEFAULT_CONN_ID,
    SeedanceHook,
    check_model_id,
    payload_to_body,
)
from airflow_provider_seedance.lifecycle import (
    DEFAULT_POLL_INTERVAL_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    DEFER_TIMEOUT_GRACE_SECONDS,
    RequestTracker,
    cancel_quietly,
    check_request,
    default_deferrable,
    finish_event,
    poll_once,
    positive_seconds,
    wait_for_request,
)
from airflow_provider_seedance.links.seedance import SeedanceVideoLink, remember_video_url
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    RequestStatus,
    SeedanceImageToVideoInput,
    SeedanceTriggerEvent,
)
from airflow_provider_seedance.operators._request_store import (
    MIN_RETENTION,
    RequestStore,
    StoredRequest,
    input_fingerprint,
    request_store_for,
)
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from airflow_provider_seedance.version_compat import TaskDeferralTimeout

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

REQUEST_ID_XCOM_KEY = "request_id"
"""XCom key of the request id, pushed as soon as the request is submitted."""

SUBMITTED_STATUS = "submitted"
"""``status`` of the return value when the task does not wait for the video."""

MAX_RETRY_DELAY_FALLBACK = timedelta(days=1)
"""Longest gap assumed between two tries when exponential backoff has no ``max_retry_delay``."""

LINEAGE_IMAGE_FIELDS = ("first_frame_image_url", "image", "image_url", "images")
"""Input fields whose http(s) URLs are reported to OpenLineage as the generation's input datasets."""


class SeedanceBaseOperator(BaseOperator):
    """
    Submit one generation to a RunComfy model and wait for its outcome; subclasses say what to submit.

    Deferrable by default: after submitting, the task hands the wait to the triggerer and holds no worker
    slot. A retry (or a rerun after a worker crash) re-attaches to the request the earlier try paid for.

    :param model_id: the RunComfy model id (templated).
    :param seedance_conn_id: the ``seedance`` connection (templated).
    :param wait_for_completion: wait for the video; ``False`` returns right after submitting.
    :param deferrable: wait in the triggerer instead of the worker. ``None``: ``[operators]
        default_deferrable`` when the deployment sets it, else ``True``.
    :param poll_interval: seconds between two status reads.
    :param timeout: deadline of the whole generation, in seconds from submission (per task try, deferred or
        not); a request still queued then is cancelled and the task fails.
    :param durable: store the request id so a new try of the task re-attaches to the request instead of
        paying for a second one (``task_state_store`` on Airflow 3.3+, an Airflow Variable on 3.0-3.2).
    :param max_cost_usd: the most one generation may cost, in US dollars. Before submitting, the price is
        estimated from the model catalog (``base_price_usd`` x ``price_unit``) and the task fails with
        :class:`~airflow_provider_seedance.exceptions.SeedanceCostLimitError` (no retry, nothing submitted)
        when the estimate is higher. ``None`` (default): no budget and no catalog call. Not checked again
        when a retry re-attaches to a request an earlier try already submitted.
    :param on_unknown_cost: what to do when the price cannot be estimated (catalog endpoint absent, unknown
        unit or length): ``"allow"`` (default) submits with a warning, ``"fail"`` refuses to submit.
    """

    template_fields: Sequence[str] = ("model_id", "seedance_conn_id")
    operator_extra_links = (SeedanceVideoLink(),)
    ui_color = "#fde7e9"
    ui_fgcolor = "#000000"

    _request_id: str | None = None
    _submitted_at: float | None = None

    def __init__(
        self,
        *,
        model_id: str,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = True,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        durable: bool = True,
        max_cost_usd: float | None = None,
        on_unknown_cost: cost.OnUnknownCost = cost.DEFAULT_ON_UNKNOWN,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_unknown_cost not in ("allow", "fail"):
            raise SeedanceConfigurationError(
                f"on_unknown_cost must be 'allow' or 'fail', got {on_unknown_cost!r}"
            )
        self.model_id = model_id
        self.seedance_conn_id = seedance_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.timeout = positive_seconds(timeout, "timeout")
        self.durable = durable
        self.max_cost_usd = max_cost_usd
        self.on_unknown_cost = on_unknown_cost
        self._lineage: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> SeedanceHook:
        """The hook for ``seedance_conn_id`` (built after templating)."""
        return SeedanceHook(seedance_conn_id=self.seedance_conn_id)

    @abstractmethod
    def build_request(self) -> tuple[str, dict[str, Any]]:
        """Return ``(model_id, JSON body)`` to submit, validated; raise :class:`SeedanceInputError` if not."""

    def before_submit(self, model_id: str, body: dict[str, Any]) -> None:
        """
        Run the checks that must pass before a new request is paid for (not on a re-attach).

        The base checks the budget (``max_cost_usd``); subclasses may add checks before it.

        :param model_id: the model the request goes to.
        :param body: the validated JSON body.
        """
        cost.check_budget(self.hook, model_id, body, self.max_cost_usd, on_unknown=self.on_unknown_cost)

    # -- execution --------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """
        Submit (or re-attach to) the generation, then defer, poll, or return at once.

        :param context: the task context.
        """
        remember_video_url(self, None)
        self._lineage = None
        self._submitted_at = None
        model_id, body = self.build_request()
        store = request_store_for(context, retention=self.state_retention()) if self.durable else None
        if self.durable and store is None:
            self.log.warning("No task instance in the context: the request id cannot be kept across tries")
        # Reading an earlier try's request is bounded too: no retry wait may hold the worker past `timeout`.
        self.hook.deadline = time.time() + self.timeout
        request_id, outcome, stored = self._resume_or_submit(store, model_id, body)
        end_time = time.time() + self.timeout
        self._request_id = request_id
        with self._unstored_failures_not_retried(request_id, stored):
            return self._follow(context, store, model_id, request_id, outcome, end_time, stored)

    def _follow(
        self,
        context: Context,
        store: RequestStore | None,
        model_id: str,
        request_id: str,
        outcome: SeedanceTriggerEvent | None,
        end_time: float,
        stored: bool,
    ) -> dict[str, Any]:
        """Push the request id, then return at once, defer, or poll in the worker until the outcome."""
        context["ti"].xcom_push(key=REQUEST_ID_XCOM_KEY, value=request_id)

        if not self.wait_for_completion and (outcome is None or outcome.status != "succeeded"):
            self._request_id = None
            self.log.info("Not waiting for Seedance request %s (wait_for_completion=False)", request_id)
            submitted = {"request_id": request_id, "model_id": model_id, "status": SUBMITTED_STATUS}
            return self._hand_back(context, submitted, store)

        # In the worker, no retry wait of a status or result read (backoff, Retry-After) passes the deadline.
        self.hook.deadline = end_time
        tracker = RequestTracker(request_id, self.log, submitted_at=self._submitted_at)
        if outcome is None:
            # Check once before deferring: a request that is already over needs no triggerer round trip.
            outcome = poll_once(self.hook, tracker)
        if outcome is None and self.deferrable:
            self.defer(
                trigger=SeedanceRequestTrigger(
                    request_id=request_id,
                    seedance_conn_id=self.seedance_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=end_time,
                    cancel_on_kill=True,
                    submitted_at=self._submitted_at,
                ),
                method_name="execute_complete",
                kwargs={"model_id": model_id, "request_id": request_id, "stored": stored},
                # A backstop only: the trigger yields its own "timeout" event at end_time.
                timeout=timedelta(seconds=max(0.0, end_time - time.time()) + DEFER_TIMEOUT_GRACE_SECONDS),
            )
        if outcome is None:
            outcome = wait_for_request(
                self.hook, tracker, end_time=end_time, poll_interval=self.poll_interval
            )
        return self._finish(context, outcome, model_id, store)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        model_id: str | None = None,
        request_id: str | None = None,
        stored: bool = True,
    ) -> dict[str, Any]:
        """
        Resume after the trigger fired: validate its event and return the result, or fail.

        :param context: the task context.
        :param event: the trigger's event payload.
        :param model_id: the model the request was submitted to (from the deferral).
        :param request_id: the request waited for (from the deferral).
        :param stored: whether the request id was stored for the next try (from the deferral); when not, a
            failure of this try is not retried by Airflow, since a retry would pay again.
        """
        remember_video_url(self, None)
        # dag.test() resumes with the event alone, so fall back to this try's XCom and rendered fields.
        expected = request_id or _pushed_request_id(context)
        with self._unstored_failures_not_retried(expected, stored):
            parsed = SeedanceTriggerEvent.parse(event, expected_request_id=expected)
            store = request_store_for(context, retention=self.state_retention()) if self.durable else None
            return self._finish(context, parsed, model_id or self.model_id, store)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """
        Resume after deferral; when Airflow's backstop deferral timeout fired, cancel a queued request too.

        :param next_method: the method to resume with.
        :param next_kwargs: its keyword arguments.
        :param context: the task context.
        """
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout as exc:
            request_id = _pushed_request_id(context)
            note = cancel_quietly(self.hook, request_id, self.log) if request_id else ""
            stored = (next_kwargs or {}).get("stored", True) is not False
            with self._unstored_failures_not_retried(request_id, stored):
                raise SeedanceTimeoutError(
                    f"Seedance request {request_id} was still being waited for when the deferral timed out. "
                    f"{note}",
                    request_id=request_id,
                    status="timeout",
                ) from exc

    def on_kill(self) -> None:
        """Cancel the request the worker is waiting for (best effort: only queued requests can be)."""
        request_id = self._request_id
        if not request_id:
            return
        self.log.info("Task killed: cancelling Seedance request %s", request_id)
        # on_kill may run in a SIGTERM handler that interrupted a call on self.hook's client: cancel through
        # a client of its own, with the connection already resolved (no lookup inside a signal handler).
        hook = self.hook.detached()
        try:
            self.log.info("%s", cancel_quietly(hook, request_id, self.log))
        finally:
            hook.close()

    def _finish(
        self,
        context: Context,
        outcome: SeedanceTriggerEvent,
        model_id: str | None,
        store: RequestStore | None,
    ) -> dict[str, Any]:
        self._request_id = None
        result = finish_event(outcome, model_id=model_id, log=self.log, hook=self.hook)
        remember_video_url(self, result["video_url"])
        if result.get("cost") is not None:
            self.log.info("Seedance request %s cost %s USD", result["request_id"], result["cost"])
        else:
            self.log.info("Seedance request %s: the API reported no cost", result["request_id"])
        self._lineage = result
        return self._hand_back(context, result, store)

    def _hand_back(
        self, context: Context, result: dict[str, Any], store: RequestStore | None
    ) -> dict[str, Any]:
        """
        Push the return value, then delete the stored request id, and return the value.

        Airflow pushes the return value only after ``execute`` returns: deleting the record first would let
        a failed push (an XCom backend outage) send the retry to submit, and pay, again. Pushed here first,
        the record is deleted only once the value is safe; Airflow's own push then writes the same value.

        :param context: the task context.
        :param result: the return value.
        :param store: the request store (``None``: nothing to delete).
        """
        if store is not None and self.do_xcom_push:
            context["ti"].xcom_push(key="return_value", value=result)
        self._forget(store)
        return result

    @contextmanager
    def _unstored_failures_not_retried(self, request_id: str | None, stored: bool) -> Iterator[None]:
        """
        Turn a failure of a try whose request id could not be stored into one Airflow does not retry.

        A retry could not re-attach to that request and would pay for a second one. A request that ended
        ``failed`` or ``cancelled`` is the exception: a retry replaces it whether or not its id was stored.

        :param request_id: the request this try submitted.
        :param stored: whether its id is stored; when it is, failures pass through unchanged.
        """
        try:
            yield
        except (Exception, AirflowTaskTimeout) as exc:
            if stored or isinstance(exc, AirflowFailException):
                raise
            if isinstance(exc, SeedanceRequestFailedError) and exc.status in ("failed", "cancelled"):
                raise
            raise SeedanceRequestNotStoredError(
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. Seedance request {request_id} was submitted "
                f"by this try, but its id could not be stored for the next one, so this failure is NOT "
                f"retried (a retry would submit, and pay for, a second request). Follow request {request_id} "
                f"with SeedanceRequestSensor, or check it in your RunComfy request history.",
                request_id=request_id,
            ) from exc

    # -- OpenLineage ------------------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """
        Describe the generation for OpenLineage: input images, output videos, request and model ids.

        Inputs are the http(s) image URLs of the request body (``data:`` URIs are not datasets); outputs are
        the generated video URLs, each named ``namespace=scheme://host``, ``name=path``. Returns ``None``
        when the OpenLineage provider is not installed or the task produced no result.

        :param task_instance: the finished task instance (unused: this try's result is kept on the task).
        """
        result = self._lineage
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset, ExternalQueryRunFacet
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        if not result:
            return OperatorLineage()
        try:
            _, body = self.build_request()
        except SeedanceError:
            body = {}
        inputs = [Dataset(namespace=ns, name=name) for ns, name in _url_datasets(_image_urls(body))]
        outputs = [
            Dataset(namespace=ns, name=name) for ns, name in _url_datasets(result.get("video_urls") or [])
        ]
        run_facets: dict[str, Any] = {}
        facet = ExternalQueryRunFacet(externalQueryId=str(result["request_id"]), source=self._api_namespace())
        if facet is not None:
            # The standard facet for "the id of the job this run started in an external system".
            run_facets["externalQuery"] = facet
        return OperatorLineage(
            inputs=[d for d in inputs if d is not None],
            outputs=[d for d in outputs if d is not None],
            run_facets=run_facets,
        )

    def _api_namespace(self) -> str:
        """The API's ``scheme://host`` for lineage (the public API's when the connection cannot be read)."""
        try:
            base_url = self.hook.config.base_url
        except Exception:
            base_url = DEFAULT_BASE_URL
        namespace, _ = _url_dataset(str(base_url)) or (DEFAULT_BASE_URL, "")
        return namespace

    # -- durability -------------------------------------------------------------------------------------

    def state_retention(self) -> timedelta:
        """Return how long the stored request id is kept: past the last possible try, at least a week."""
        retries = max(0, int(self.retries or 0))
        delay: timedelta | float | None = self.retry_delay
        if self.retry_exponential_backoff:
            delay = self.max_retry_delay or MAX_RETRY_DELAY_FALLBACK
        gap = delay if isinstance(delay, timedelta) else timedelta(seconds=float(delay or 0))
        per_try = timedelta(seconds=self.timeout + DEFER_TIMEOUT_GRACE_SECONDS)
        return max(MIN_RETENTION, per_try * (retries + 1) + gap * retries)

    def _resume_or_submit(
        self, store: RequestStore | None, model_id: str, body: dict[str, Any]
    ) -> tuple[str, SeedanceTriggerEvent | None, bool]:
        """
        Return the request to follow, its outcome when already known, and whether its id is stored.

        Submits only when no earlier try left a request to re-attach to.
        """
        fingerprint = input_fingerprint(model_id, body)
        if store is not None:
            previous = self._load(store)
            if previous is not None and not previous.matches(model_id, fingerprint):
                self._set_aside(previous.request_id)
            elif previous is not None:
                reuse, outcome = self._inspect_previous(previous.request_id, previous.submitted_at)
                if reuse:
                    self._submitted_at = previous.submitted_at
                    return previous.request_id, outcome, True
        self.before_submit(model_id, body)
        try:
            submitted = self.hook.submit(model_id, body)
        except SeedanceSubmissionStateUnknownError as exc:
            # The answer named a request it may have created: keep it, so a new try (a clear) re-attaches.
            if store is not None and exc.request_id is not None:
                self._save(store, StoredRequest(exc.request_id, model_id, fingerprint, time.time()))
            raise
        self._submitted_at = time.time()
        if store is None:
            return submitted.request_id, None, not self.durable
        stored = self._save(
            store, StoredRequest(submitted.request_id, model_id, fingerprint, self._submitted_at)
        )
        return submitted.request_id, None, stored

    def _set_aside(self, request_id: str) -> None:
        """
        Deal with a request an earlier try submitted for another model or input, before submitting anew.

        The current input is what the task must generate, so a new request is submitted. The old one is
        never dropped silently: still queued, it is cancelled (nothing is billed); running or finished, a
        WARNING says it goes on (and is billed) and that its result is not used.

        :param request_id: the request of the earlier try.
        """
        changed = (
            f"Seedance request {request_id} was submitted by an earlier try of this task for a different "
            f"model or input (the DAG or its parameters changed since)"
        )
        try:
            state = self.hook.get_status(request_id).state
        except SeedanceNotFoundError:
            self.log.info("%s and is no longer known to the API; submitting the current input", changed)
            return
        except SeedanceError as exc:
            self.log.warning(
                "%s; its state could not be read (%s). %s Submitting the current input.",
                changed,
                exc,
                cancel_quietly(self.hook, request_id, self.log),
            )
            return
        if state is RequestStatus.IN_QUEUE:
            self.log.warning(
                "%s and is still queued: cancelling it. %s Submitting the current input.",
                changed,
                cancel_quietly(self.hook, request_id, self.log),
            )
        elif state.is_failure():
            self.log.info("%s and ended %s; submitting the current input", changed, state.value)
        elif state is RequestStatus.IN_PROGRESS:
            self.log.warning(
                "%s and is still generating: it cannot be cancelled any more, it runs on and is billed, and "
                "its result is not used. Submitting the current input as a new, separately billed request.",
                changed,
            )
        else:
            self.log.warning(
                "%s and has already finished (%s; billed if it succeeded): its result is not used. "
                "Submitting the current input as a new, separately billed request.",
                changed,
                state.value,
            )

    def _inspect_previous(
        self, request_id: str, submitted_at: float | None = None
    ) -> tuple[bool, SeedanceTriggerEvent | None]:
        """Decide whether a request of an earlier try is re-used: ``(reuse, outcome if already over)``."""
        tracker = RequestTracker(request_id, self.log, submitted_at=submitted_at)
        try:
            outcome = check_request(self.hook, tracker)
        except SeedanceNotFoundError:
            grace = tracker.not_found_grace_left()
            if grace > 0:
                # Submitted (or finished) moments ago: the API's read-after-write lag, not an expired request.
                self.log.warning(
                    "Seedance request %s, submitted by an earlier try, is not found by the API yet; taking "
                    "it as read-after-write lag for another %.0f s and re-attaching rather than paying for "
                    "a second request",
                    request_id,
                    grace,
                )
                return True, None
            self.log.warning(
                "Seedance request %s, submitted by an earlier try, is no longer known to the API (expired "
                "or deleted); submitting a new request",
                request_id,
            )
            return False, None
        except SeedanceTransientError as exc:
            raise SeedanceError(
                f"Could not read the state of Seedance request {request_id}, submitted by an earlier try of "
                f"this task ({exc}). Not submitting a second, paid request: this try fails and the next one "
                f"checks again."
            ) from exc
        if outcome is None:
            self.log.info(
                "Re-attaching to Seedance request %s, submitted by an earlier try and still running; "
                "not submitting a new one",
                request_id,
            )
            return True, None
        if outcome.status in ("failed", "cancelled"):
            self.log.warning(
                "Seedance request %s, submitted by an earlier try, ended %s (%s); submitting a new request",
                request_id,
                outcome.status,
                outcome.message,
            )
            return False, None
        self.log.info(
            "Seedance request %s, submitted by an earlier try, already ended (%s); using it instead of "
            "submitting again",
            request_id,
            outcome.status,
        )
        return True, outcome

    def _load(self, store: RequestStore) -> StoredRequest | None:
        try:
            return store.load()
        except Exception as exc:
            raise SeedanceError(
                f"Could not read the Seedance request id stored by earlier tries in the {store.description} "
                f"({type(exc).__name__}: {exc}). Not submitting, so as not to pay twice; this try fails and "
                f"the next one reads it again. Set durable=False to submit without this check."
            ) from exc

    def _save(self, store: RequestStore, record: StoredRequest) -> bool:
        """Store the request id for the next try; return whether that worked (a failure is logged only)."""
        try:
            store.save(record)
        except Exception as exc:
            # The request exists and is paid for: failing now would make the retry submit a second one.
            self.log.error(
                "Could not store Seedance request id %s in the %s (%s: %s): a new try could not re-attach to "
                "it, so if this try fails, it fails without an Airflow retry",
                record.request_id,
                store.description,
                type(exc).__name__,
                exc,
            )
            return False
        self.log.debug("Stored Seedance request id %s in the %s", record.request_id, store.description)
        return True

    def _forget(self, store: RequestStore | None) -> None:
        if store is None:
            return
        try:
            store.discard()
        except Exception as exc:
            self.log.warning(
                "Could not delete the stored Seedance request id: %s: %s", type(exc).__name__, exc
            )


class SeedanceSubmitOperator(SeedanceBaseOperator):
    """
    Generate with any RunComfy model: submit a free-form ``input`` dict, wait for the output.

    Returns (XCom ``return_value``) ``{"request_id", "model_id", "status": "succeeded", "video_url",
    "video_urls", "image_urls", "output", "cost"}``; with ``wait_for_completion=False``,
    ``{"request_id", "model_id", "status": "submitted"}``. XCom ``request_id`` is pushed as soon as the
    request exists.

    :param model_id: the RunComfy model id, e.g. ``bytedance/seedance-v2/pro`` (templated).
    :param input: the model's input fields, sent as the flat JSON body (templated; a JSON object string is
        accepted too, as rendered templates produce).
    :param seedance_conn_id: the ``seedance`` connection (templated).
    :param wait_for_completion: wait for the video; ``False`` returns right after submitting.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable`` if set, else True).
    :param poll_interval: seconds between two status reads.
    :param timeout: deadline of the whole generation, seconds from submission.
    :param durable: re-attach a new try to the request an earlier try paid for.
    :param validate_input: validate ``input`` with the typed model of ``model_id`` from
        :mod:`airflow_provider_seedance.catalog` (unknown fields and bad values fail before anything is
        sent) when the catalog knows the model id; an unknown model id is sent as written. ``False``
        (default): the input is sent as written.
    :param max_cost_usd: refuse to submit when the estimated price is higher (US dollars; ``None``: no
        budget).
    :param on_unknown_cost: ``"allow"`` (default) or ``"fail"`` when the price cannot be estimated.
    """

    template_fields: Sequence[str] = ("model_id", "input", "seedance_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"input": "json"}

    def __init__(
        self,
        *,
        model_id: str,
        input: Mapping[str, Any] | str,
        validate_input: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.input = input
        self.validate_input = validate_input

    def build_request(self) -> tuple[str, dict[str, Any]]:
        """Check the model id and that the input is a JSON object; nothing is sent before this passes."""
        model_id = check_model_id(self.model_id)
        data: Any = self.input
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise SeedanceInputError(
                    "input: must be a mapping of the model's input fields (or a JSON object string), "
                    f"got a string that is not JSON: {data[:80]!r}"
                ) from None
        body = payload_to_body(data)
        if self.validate_input:
            body = validate_request_body(model_id, body)
        return model_id, body


class SeedanceImageToVideoOperator(SeedanceBaseOperator):
    """
    Turn a first-frame image and a prompt into a video with Seedance 1.5 Pro image-to-video.

    Every input field is templated and validated with
    :class:`~airflow_provider_seedance.models.SeedanceImageToVideoInput` after templating, before any HTTP
    call. Returns the same dict as :class:`SeedanceSubmitOperator`.

    :param prompt: what happens in the video (non-empty; under 500 characters recommended).
    :param first_frame_image_url: public http(s) URL or ``data:image/...;base64,`` URI of the first frame.
    :param resolution: ``480p``, ``720p`` or ``1080p``.
    :param ratio: ``16:9``, ``4:3``, ``1:1``, ``3:4``, ``9:16``, ``21:9`` or ``adaptive``.
    :param duration: length in seconds, 4 to 12.
    :param generate_audio: generate a soundtrack.
    :param camera_fixed: keep the camera still.
    :param model_id: the RunComfy model id.
    :param seedance_conn_id: the ``seedance`` connection.
    :param wait_for_completion: wait for the video; ``False`` returns right after submitting.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable`` if set, else True).
    :param poll_interval: seconds between two status reads.
    :param timeout: deadline of the whole generation, seconds from submission.
    :param durable: re-attach a new try to the request an earlier try paid for.
    :param check_image: before submitting, download the first-frame image (streamed, capped at 30 MB, no
        credentials) and check the model page's rules (300-6000 px sides, aspect 0.4-2.5, < 30 MB), so a bad
        image fails the task before it is paid for. Needs Pillow (the ``images`` extra). Off by default:
        nothing is downloaded unless asked. Runs before the cost check, and not on a re-attach.
    :param max_cost_usd: refuse to submit when the estimated price is higher (US dollars; ``None``: no
        budget).
    :param on_unknown_cost: ``"allow"`` (default) or ``"fail"`` when the price cannot be estimated.
    """

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "prompt",
        "first_frame_image_url",
        "resolution",
        "ratio",
        "duration",
        "generate_audio",
        "camera_fixed",
    )
    template_fields: Sequence[str] = ("model_id", *INPUT_FIELDS, "seedance_conn_id")

    def __init__(
        self,
        *,
        prompt: str,
        first_frame_image_url: str,
        resolution: str = "480p",
        ratio: str = "adaptive",
        duration: int | str = 5,
        generate_audio: bool | str = True,
        camera_fixed: bool | str = True,
        model_id: str = SEEDANCE_1_5_PRO_I2V_MODEL_ID,
        check_image: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.check_image = check_image
        self.prompt = prompt
        self.first_frame_image_url = first_frame_image_url
        self.resolution = resolution
        self.ratio = ratio
        self.duration = duration
        self.generate_audio = generate_audio
        self.camera_fixed = camera_fixed

    @property
    def input(self) -> dict[str, Any]:
        """The input fields as given (after templating), before validation."""
        return {name: getattr(self, name) for name in self.INPUT_FIELDS}

    def build_request(self) -> tuple[str, dict[str, Any]]:
        """Validate the fields with the model's schema; nothing is sent before this passes."""
        model_id = check_model_id(self.model_id)
        return model_id, SeedanceImageToVideoInput.validate_input(self.input).to_request_body()

    def before_submit(self, model_id: str, body: dict[str, Any]) -> None:
        """
        Check the first-frame image when ``check_image`` is set, then the budget.

        :param model_id: the model the request goes to.
        :param body: the validated JSON body.
        """
        if self.check_image:
            from airflow_provider_seedance.downloads import connection_allows_private_networks
            from airflow_provider_seedance.image_checks import check_first_frame_image

            check_first_frame_image(
                body["first_frame_image_url"],
                allow_private_networks=connection_allows_private_networks(self.seedance_conn_id),
            )
        super().before_submit(model_id, body)


class SeedanceV2ProOperator(SeedanceBaseOperator):
    """
    Generate a video with Seedance 2.0 Pro from a prompt plus optional reference images, clips and sound.

    Every input field is templated and validated with
    :class:`~airflow_provider_seedance.catalog.Seedance2ProInput` after templating, before any HTTP call.
    Only the fields you set are sent (``None`` means "not set": RunComfy applies its own default). Returns
    the same dict as :class:`SeedanceSubmitOperator`.

    :param prompt: what happens in the video (non-empty).
    :param image_url: up to 9 reference images (http(s) URLs or ``data:image/...;base64,`` URIs); one URL is
        taken as a one-item list.
    :param video_url: up to 3 reference clips by public http(s) URL (2-15 s each).
    :param audio_url: up to 3 audio tracks by public http(s) URL (2-15 s, < 15 MB each).
    :param aspect_ratio: ``adaptive``, ``16:9``, ``9:16``, ``4:3``, ``3:4``, ``1:1`` or ``21:9``.
    :param duration: length in seconds, 4 to 15 (the model's default, 5 s, prices a request without it).
    :param resolution: ``480p`` or ``720p``.
    :param generate_audio: generate a soundtrack.
    :param seed: an integer seed for reproducible results.
    :param model_id: the RunComfy model id.
    :param max_cost_usd: refuse to submit when the estimated price is higher (US dollars; ``None``: no
        budget).
    :param on_unknown_cost: ``"allow"`` (default) or ``"fail"`` when the price cannot be estimated.
    """

    INPUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "prompt",
        "image_url",
        "video_url",
        "audio_url",
        "aspect_ratio",
        "duration",
        "resolution",
        "generate_audio",
        "seed",
    )
    template_fields: Sequence[str] = ("model_id", *INPUT_FIELDS, "seedance_conn_id")

    def __init__(
        self,
        *,
        prompt: str,
        image_url: str | Sequence[str] | None = None,
        video_url: str | Sequence[str] | None = None,
        audio_url: str | Sequence[str] | None = None,
        aspect_ratio: str | None = None,
        duration: int | str | None = None,
        resolution: str | None = None,
        generate_audio: bool | None = None,
        seed: int | str | None = None,
        model_id: str = SEEDANCE_2_PRO_MODEL_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_id=model_id, **kwargs)
        self.prompt = prompt
        self.image_url = image_url
        self.video_url = video_url
        self.audio_url = audio_url
        self.aspect_ratio = aspect_ratio
        self.duration = duration
        self.resolution = resolution
        self.generate_audio = generate_audio
        self.seed = seed

    @property
    def input(self) -> dict[str, Any]:
        """The input fields as given (after templating), before validation; ``None`` means not set."""
        return {name: getattr(self, name) for name in self.INPUT_FIELDS}

    def build_request(self) -> tuple[str, dict[str, Any]]:
        """Validate the fields with :class:`Seedance2ProInput`; nothing is sent before this passes."""
        model_id = check_model_id(self.model_id)
        return model_id, Seedance2ProInput.validate_input(self.input).to_request_body()


def _pushed_request_id(context: Context) -> str | None:
    """Return the request id this try pushed to XCom (this task instance's own, mapped or not)."""
    ti = context["ti"]
    # Without explicit map_indexes, xcom_pull returns the values of every mapped instance.
    value = ti.xcom_pull(task_ids=ti.task_id, key=REQUEST_ID_XCOM_KEY, map_indexes=ti.map_index)
    return value if isinstance(value, str) else None


def _url_dataset(url: str) -> tuple[str, str] | None:
    """
    Name an http(s) URL the OpenLineage way: ``(scheme://host[:port], path)``; ``None`` for anything else.

    Credentials and the query string (a signature, a token) are left out.

    :param url: the URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https", "s3", "gs") or not parts.hostname:
        return None
    host = parts.hostname + (f":{port}" if port else "")
    return f"{parts.scheme.lower()}://{host}", parts.path or "/"


def _url_datasets(urls: Sequence[object]) -> list[tuple[str, str]]:
    named = (_url_dataset(url) for url in urls if isinstance(url, str))
    return [item for item in named if item is not None]


def _image_urls(body: Mapping[str, Any]) -> list[str]:
    """Return the image URLs of a request body (fields of :data:`LINEAGE_IMAGE_FIELDS`), in field order."""
    urls: list[str] = []
    for name in LINEAGE_IMAGE_FIELDS:
        value = body.get(name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item.lower().startswith(("https://", "http://")):
                urls.append(item)
    return urls


__all__ = [
    "SeedanceBaseOperator",
    "SeedanceImageToVideoOperator",
    "SeedanceSubmitOperator",
    "SeedanceV2ProOperator",
    # Re-exported from links/: provider info and serialized DAGs of earlier versions name it here.
    "SeedanceVideoLink",
]
