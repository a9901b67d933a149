"""The emulator's state machine: jobs and their timelines, plans, faults, the model catalog, the request log.

Pure Python, no web imports, and thread-safe: the server thread and the test thread both touch one
:class:`EmulatorState`, so every method takes a :class:`threading.Lock` for the few microseconds it needs.
A job's status is computed from the time elapsed since it was submitted (no background task moves it along),
which keeps thousands of concurrent jobs cheap and lets tests swap the clock.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from airflow_provider_seedance.catalog import (
    SEEDANCE_1_LITE_I2V_MODEL_ID,
    SEEDANCE_1_LITE_R2V_MODEL_ID,
    SEEDANCE_1_PRO_FAST_T2V_MODEL_ID,
    SEEDANCE_2_5_I2V_MODEL_IDS,
    SEEDANCE_2_5_T2V_MODEL_IDS,
    SEEDANCE_2_PRO_MODEL_ID,
)
from airflow_provider_seedance.models import MODEL_ID_PATTERN, SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing.media import MAX_GENERATED_SIZE, MIN_GENERATED_SIZE

DEFAULT_TOKEN = "test-token"
"""The token an emulator accepts when none is given."""

DEFAULT_QUEUE_SECONDS = 0.2
"""Default time a job waits ``in_queue``: short, for fast in-process tests."""

DEFAULT_RUN_SECONDS = 0.5
"""Default time a job spends ``in_progress``."""

DEFAULT_INITIAL_QUEUE_POSITION = 3
"""``queue_position`` right after a submit; it counts down to 1 while the job waits."""

DEFAULT_DURATION_SECONDS = 5
"""Video length used for per-second prices when the input has no ``duration`` (the models' default)."""

DEFAULT_MAX_LOG_ENTRIES = 100_000
"""The request log keeps this many entries; benchmarks with 10,000 polling jobs must not grow it forever."""

DEFAULT_ERROR_MESSAGE = "The video could not be generated (a failure planned in the emulator's JobPlan)."
"""The ``error`` of a failed job when its plan sets none."""

DEFAULT_UNKNOWN_STATUS = "mystery_state"
"""The status string an ``unknown_status`` fault reports: one the API never documents."""

DEFAULT_SLOW_SECONDS = 5.0
"""How long a ``slow`` fault waits before answering, unless it says otherwise."""

DEFAULT_RANGE_CAP_BYTES = 1024 * 1024
"""How many bytes a ``capped_range`` fault serves per ranged answer, unless it says otherwise."""

DEFAULT_ERROR_200_CODE = 500000
"""``error_code`` of an ``error_200`` fault that names none."""

MAX_VIDEOS_PER_JOB = 16
"""The most videos one planned job may produce."""

COST_DECIMALS = 6
"""Costs are rounded to a micro-dollar so float noise (0.06 x 7 = 0.42000000000000004) never shows."""

Endpoint = Literal["submit", "status", "result", "cancel", "model", "download", "other"]
"""What a recorded request called; ``other`` is a path the API does not have."""

FaultEndpoint = Literal["submit", "status", "result", "cancel", "model", "download", "any"]
FaultKind = Literal[
    "http_error",
    "error_200",
    "payload_with_error",
    "malformed_json",
    "drop",
    "slow",
    "truncated",
    "unknown_status",
    "capped_range",
    "redirect",
    "error_page",
    "empty_body",
]
Outcome = Literal["succeed", "fail", "stuck_in_queue", "stuck_running"]
Phase = Literal["in_queue", "in_progress", "succeeded", "failed", "cancelled"]
OutputStyle = Literal["auto", "video", "videos", "both"]

_STATUS_ONLY_KINDS = {
    "unknown_status": frozenset({"status", "result"}),
    "capped_range": frozenset({"download"}),
    "error_page": frozenset({"download"}),
    "empty_body": frozenset({"download"}),
}
_NOT_FOR_DOWNLOADS = frozenset({"malformed_json", "payload_with_error"})


# ---------------------------------------------------------------------------------------------------------
# Plans and faults (JSON-able: the control endpoints take them as request bodies)
# ---------------------------------------------------------------------------------------------------------


class JobPlan(BaseModel):
    """
    How a submitted job behaves: its timeline, its outcome and its output.

    :param queue_seconds: time spent ``in_queue`` (``queue_position`` counts down meanwhile).
    :param run_seconds: time spent ``in_progress`` after the queue.
    :param outcome: ``succeed``, ``fail``, ``stuck_in_queue`` (never leaves the queue) or ``stuck_running``
        (never finishes).
    :param fail_probability: chance (0..1) that a ``succeed`` job fails instead, drawn from the state's
        seeded random generator at submit time (for chaos runs).
    :param error: the ``error`` of a failed result: a string or an object such as
        ``{"code": ..., "message": ...}``.
    :param failed_status_on_status_endpoint: what /status says for a failed run: ``completed`` (the
        documented reading) or ``failed``.
    :param succeeded_status_on_result_endpoint: what /result says for a succeeded run: ``succeeded`` (the
        documented reading) or ``completed`` (with the output and no error), as /status says.
    :param not_found_seconds: read-after-write lag: for this long after the submit, /status, /result and
        /cancel answer 404 (404001) as if the request did not exist, as some APIs do right after accepting
        a request.
    :param num_videos: videos in the output; 0 gives a succeeded result whose output has no video.
    :param output_style: ``auto`` (``video`` for one, ``video`` + ``videos`` for several), ``video`` (only the
        first URL), ``videos`` (only the list) or ``both``.
    :param video_size_bytes: serve generated bodies of exactly this size; ``None`` serves the sample MP4.
    :param cost_usd: the ``cost`` to report instead of the catalog price x duration.
    :param initial_queue_position: ``queue_position`` right after the submit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_seconds: float = Field(DEFAULT_QUEUE_SECONDS, ge=0, allow_inf_nan=False)
    run_seconds: float = Field(DEFAULT_RUN_SECONDS, ge=0, allow_inf_nan=False)
    outcome: Outcome = "succeed"
    fail_probability: float = Field(0.0, ge=0, le=1)
    error: str | dict[str, Any] = DEFAULT_ERROR_MESSAGE
    failed_status_on_status_endpoint: Literal["completed", "failed"] = "completed"
    succeeded_status_on_result_endpoint: Literal["succeeded", "completed"] = "succeeded"
    not_found_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    num_videos: int = Field(1, ge=0, le=MAX_VIDEOS_PER_JOB)
    output_style: OutputStyle = "auto"
    video_size_bytes: int | None = Field(None, ge=MIN_GENERATED_SIZE, le=MAX_GENERATED_SIZE)
    cost_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    initial_queue_position: int = Field(DEFAULT_INITIAL_QUEUE_POSITION, ge=1)


class Fault(BaseModel):
    """
    A failure to inject into matching calls; faults are checked in the order they were added.

    A call matches when its endpoint equals ``endpoint`` (or ``endpoint`` is ``any``) and, when set, its
    ``model_id`` and ``request_id`` are equal. The first ``skip`` matching calls go through untouched, then
    each matching call is hit with chance ``probability`` (always when ``None``) until ``times`` calls were
    hit (``None``: every call, for as long as the fault stays).

    ``http_error`` and ``error_200`` answer *instead of* handling the call (a failed submit creates no job);
    ``drop``, ``truncated``, ``slow``, ``malformed_json``, ``unknown_status`` and ``payload_with_error``
    damage or delay the answer of a call that *was* handled (a dropped submit did create, and bill, a job:
    the ambiguous case). ``payload_with_error`` keeps the normal answer (a submit's ``request_id`` and URLs)
    and adds an error to it: ``error_code`` and ``error_message``, or the keys of ``body`` (e.g.
    ``{"code": 500, "message": "..."}``); its HTTP status is 200 unless ``status_code`` is set.
    ``capped_range`` and ``redirect`` shape downloads the way some CDNs do: a ranged request answered with
    at most ``cap_bytes`` bytes (a valid ``206`` whose ``Content-Range`` names the full size), or a ``302``
    to ``location``. A ``redirect`` aimed at an API call answers ``307`` to ``location`` instead of
    handling the call (a redirected submit creates no job). ``error_page`` and ``empty_body`` answer a
    download the way a CDN does for a link it no longer serves: ``200`` with an HTML page (``body``, else
    a short "link expired" page), or ``200`` with no bytes at all (``Content-Length: 0``, or chunked with
    ``hide_length``).

    :param kind: ``http_error``, ``error_200``, ``payload_with_error``, ``malformed_json``, ``drop``,
        ``slow``, ``truncated``, ``unknown_status``, ``capped_range``, ``redirect``, ``error_page`` or
        ``empty_body``.
    :param endpoint: ``submit``, ``status``, ``result``, ``cancel``, ``model``, ``download`` or ``any``.
    :param model_id: only calls about this model (for request calls: the model the request was submitted to).
    :param request_id: only calls about this request.
    :param times: how many calls to hit; ``None`` hits every matching call.
    :param skip: let this many matching calls through before hitting any.
    :param probability: chance (0..1) that a matching call is hit, from the state's seeded random generator.
    :param status_code: HTTP status of an ``http_error`` (400..599); of a ``payload_with_error`` answer
        only when set explicitly (else 200).
    :param error_code: RunComfy ``error_code`` in the error body (``http_error``: omitted when ``None``).
    :param error_message: ``error_message`` in the error body.
    :param retry_after: seconds to send as ``Retry-After`` with an ``http_error``.
    :param delay_seconds: how long a ``slow`` fault waits before answering normally.
    :param truncate_at_bytes: how many body bytes a ``truncated`` answer sends before the cut.
    :param truncate_fraction: the share of the body sent when ``truncate_at_bytes`` is not set.
    :param status_value: the undocumented status an ``unknown_status`` fault reports.
    :param cap_bytes: the most bytes a ``capped_range`` answer to a ``Range`` request carries.
    :param location: where a ``redirect`` sends the client (any URL: nothing checks or fetches it).
    :param hide_length: send a download answer without ``Content-Length`` (chunked), as streaming CDNs do;
        with ``drop`` or ``truncated`` the client cannot tell how much it missed.
    :param body: the exact JSON body of an ``http_error``/``error_200`` answer, the exact text of a
        ``malformed_json`` answer, or the keys a ``payload_with_error`` fault adds (a JSON object), instead of
        the default ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    endpoint: FaultEndpoint = "any"
    model_id: str | None = None
    request_id: str | None = None
    times: int | None = Field(1, ge=1)
    skip: int = Field(0, ge=0)
    probability: float | None = Field(None, ge=0, le=1)
    status_code: int = Field(500, ge=400, le=599)
    error_code: int | None = None
    error_message: str | None = None
    retry_after: float | None = Field(None, ge=0, allow_inf_nan=False)
    delay_seconds: float = Field(DEFAULT_SLOW_SECONDS, ge=0, allow_inf_nan=False)
    truncate_at_bytes: int | None = Field(None, ge=0)
    truncate_fraction: float = Field(0.5, ge=0, lt=1)
    status_value: str = DEFAULT_UNKNOWN_STATUS
    body: Any = None
    cap_bytes: int = Field(DEFAULT_RANGE_CAP_BYTES, ge=1)
    location: str | None = None
    hide_length: bool = False

    @model_validator(mode="after")
    def _kind_fits_endpoint(self) -> Fault:
        allowed = _STATUS_ONLY_KINDS.get(self.kind)
        if allowed is not None and self.endpoint not in allowed | {"any"}:
            raise ValueError(
                f"a {self.kind} fault applies only to the {' and '.join(sorted(allowed))} endpoints"
            )
        if self.kind in _NOT_FOR_DOWNLOADS and self.endpoint == "download":
            raise ValueError(f"a {self.kind} fault applies only to JSON endpoints, not downloads")
        if self.kind == "redirect" and not self.location:
            raise ValueError("a redirect fault needs a location")
        if (
            self.kind in ("malformed_json", "error_page")
            and self.body is not None
            and not isinstance(self.body, str)
        ):
            raise ValueError(
                f"the body of a {self.kind} fault is the raw text to send, so it must be a string"
            )
        if self.kind == "payload_with_error" and self.body is not None and not isinstance(self.body, dict):
            raise ValueError(
                "the body of a payload_with_error fault holds the keys added to the answer: a JSON object"
            )
        return self

    def matches(self, endpoint: str, model_id: str | None, request_id: str | None) -> bool:
        """
        Return whether a call to ``endpoint`` about ``model_id``/``request_id`` is one this fault targets.

        :param endpoint: the endpoint called.
        :param model_id: the model the call is about, if known.
        :param request_id: the request the call is about, if any.
        """
        if self.endpoint not in ("any", endpoint):
            return False
        allowed = _STATUS_ONLY_KINDS.get(self.kind)
        if allowed is not None and endpoint not in allowed:
            return False
        if self.kind in _NOT_FOR_DOWNLOADS and endpoint == "download":
            return False
        if self.model_id is not None and self.model_id != model_id:
            return False
        return self.request_id is None or self.request_id == request_id


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int | None
    skip_left: int

    def view(self) -> Fault:
        return self.fault.model_copy(update={"times": self.remaining, "skip": self.skip_left})


# ---------------------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    request_id: str
    model_id: str
    account: str
    body: dict[str, Any]
    plan: JobPlan
    outcome: Outcome
    created_mono: float
    created_wall: float
    queue_end: float
    run_end: float
    cost_usd: float | None
    cancelled_mono: float | None = None
    hidden_until: float = 0.0


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """
    A job as seen at one instant.

    :param request_id: the request id.
    :param model_id: the model it was submitted to.
    :param account: a non-secret label of the token that submitted it.
    :param phase: ``in_queue``, ``in_progress``, ``succeeded``, ``failed`` or ``cancelled``.
    :param queue_position: the position while ``in_queue``, else ``None``.
    :param created_at: submit time (epoch seconds).
    :param finished_at: end time (epoch seconds) once it succeeded, failed or was cancelled.
    :param plan: the plan the job follows.
    :param outcome: the outcome drawn at submit time (``fail_probability`` may turn ``succeed`` into
        ``fail``).
    :param body: the submitted input.
    :param cost_usd: what the finished job costs (``None`` while it runs or when the price is unknown).
    :param hidden: the job is still within its plan's ``not_found_seconds``: the API answers 404 for it.
    """

    request_id: str
    model_id: str
    account: str
    phase: Phase
    queue_position: int | None
    created_at: float
    finished_at: float | None
    plan: JobPlan
    outcome: Outcome
    body: dict[str, Any]
    cost_usd: float | None
    hidden: bool = False

    @property
    def status(self) -> str:
        """The value of ``status`` on the /status endpoint."""
        if self.phase == "succeeded":
            return "completed"
        if self.phase == "failed":
            return self.plan.failed_status_on_status_endpoint
        return self.phase

    def to_dict(self) -> dict[str, Any]:
        """Return the job as JSON-able data (for ``GET /_emulator/jobs``)."""
        return {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "account": self.account,
            "phase": self.phase,
            "status": self.status,
            "queue_position": self.queue_position,
            "created_at": iso_timestamp(self.created_at),
            "finished_at": iso_timestamp(self.finished_at),
            "outcome": self.outcome,
            "cost_usd": self.cost_usd,
            "body": self.body,
            "plan": self.plan.model_dump(mode="json"),
        }


class UnknownRequestError(LookupError):
    """No job has this request id (HTTP 404, error code 404001)."""


class ForeignRequestError(PermissionError):
    """The job belongs to another account's token (HTTP 403, error code 403001)."""


def iso_timestamp(epoch: float | None) -> str | None:
    """
    Render epoch seconds as ISO 8601 UTC (``2025-01-01T12:00:00.000000Z``); ``None`` stays ``None``.

    :param epoch: seconds since the epoch.
    """
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, tz=timezone.utc)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def account_of(token: str) -> str:
    """
    Return a stable, non-secret label of a token, used to tell accounts apart without storing tokens in jobs.

    :param token: the bearer token.
    """
    return "acct_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _queue_position(initial: int, queue_seconds: float, elapsed: float) -> int:
    if queue_seconds <= 0:
        return 1
    remaining = max(0.0, queue_seconds - elapsed) / queue_seconds
    return max(1, min(initial, math.ceil(initial * remaining)))


def _duration_seconds(body: Mapping[str, Any]) -> float:
    value = body.get("duration")
    if isinstance(value, bool):
        return DEFAULT_DURATION_SECONDS
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return DEFAULT_DURATION_SECONDS
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float: junk, like the other unusable values
            return DEFAULT_DURATION_SECONDS
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return DEFAULT_DURATION_SECONDS


# ---------------------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------------------


def _entry(model_id: str, display_name: str, price: float | None, unit: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_id": model_id, "display_name": display_name}
    if price is not None:
        entry["base_price_usd"] = price
    entry["price_unit"] = unit
    entry.update(extra)
    return entry


def default_catalog() -> dict[str, dict[str, Any]]:
    """Return the default catalog: every Seedance model id the API contract lists, with plausible prices."""
    entries = [
        _entry(SEEDANCE_1_5_PRO_I2V_MODEL_ID, "Seedance 1.5 Pro Image to Video", 0.06, "second"),
        _entry(SEEDANCE_1_LITE_I2V_MODEL_ID, "Seedance 1.0 Lite Image to Video", 0.036, "second"),
        _entry(SEEDANCE_1_LITE_R2V_MODEL_ID, "Seedance 1.0 Lite Reference to Video", 0.036, "second"),
        _entry(SEEDANCE_1_PRO_FAST_T2V_MODEL_ID, "Seedance 1.0 Pro Fast Text to Video", 0.2, "output"),
        _entry(SEEDANCE_2_PRO_MODEL_ID, "Seedance 2.0 Pro", 0.12, "second"),
    ]
    i2v_prices = {"480p": 0.05, "720p": 0.08, "1080p": 0.15, "4k": 0.4}
    for tier, model_id in SEEDANCE_2_5_I2V_MODEL_IDS.items():
        entries.append(_entry(model_id, f"Seedance 2.5 Image to Video {tier}", i2v_prices[tier], "second"))
    t2v_prices = {"1080p": 0.15, "4k": 0.4}
    for tier, model_id in SEEDANCE_2_5_T2V_MODEL_IDS.items():
        entries.append(_entry(model_id, f"Seedance 2.5 Text to Video {tier}", t2v_prices[tier], "second"))
    return {entry["model_id"]: entry for entry in entries}


# ---------------------------------------------------------------------------------------------------------
# The request log
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedRequest:
    """
    One HTTP request the emulator received (control endpoints are not recorded).

    It is recorded when the request arrives, so a count is exact even while a ``slow`` answer is pending;
    ``status_code`` is filled in when the answer starts (``None`` until then).

    :param method: the HTTP method.
    :param path: the URL path.
    :param endpoint: ``submit``, ``status``, ``result``, ``cancel``, ``model``, ``download`` or ``other``.
    :param headers: the request headers, names in lower case.
    :param query: the raw query string.
    :param model_id: the model the call is about, when known.
    :param request_id: the request the call is about, if any.
    :param status_code: the HTTP status answered.
    :param body: the parsed JSON body of a submit.
    :param fault: the kind of the fault applied to the call, if any.
    :param timestamp: arrival time (epoch seconds).
    :param client_port: the client's TCP port: requests with the same port came over the same connection.
    """

    method: str
    path: str
    endpoint: Endpoint
    headers: dict[str, str]
    query: str = ""
    model_id: str | None = None
    request_id: str | None = None
    status_code: int | None = None
    body: Any = None
    fault: str | None = None
    timestamp: float = field(default_factory=time.time)
    client_port: int | None = None

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """
        Return the record as JSON-able data.

        :param redact: replace the ``authorization`` header's token with ``<redacted>``.
        """
        headers = dict(self.headers)
        if redact and "authorization" in headers:
            scheme = headers["authorization"].partition(" ")[0]
            headers["authorization"] = f"{scheme} <redacted>"
        return {
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "query": self.query,
            "model_id": self.model_id,
            "request_id": self.request_id,
            "status_code": self.status_code,
            "headers": headers,
            "body": self.body,
            "fault": self.fault,
            "timestamp": self.timestamp,
            "client_port": self.client_port,
        }


# ---------------------------------------------------------------------------------------------------------
# The state
# ---------------------------------------------------------------------------------------------------------


class EmulatorState:
    """
    Everything the emulator knows: tokens, jobs, plans, faults, catalog, switches and the request log.

    :param token: the accepted token, or several (one account each).
    :param plan: the default :class:`JobPlan` (fast timings when ``None``).
    :param time_scale: multiply every planned duration by this (0.01 turns a 10 s plan into 0.1 s).
    :param clock: a monotonic clock in seconds; tests may pass a fake one.
    :param seed: seed of the random generator behind fault ``probability`` and plan ``fail_probability``.
    :param max_log_entries: how many requests the log keeps (the oldest are dropped).
    :param download_rate_limit: bytes per second each download connection is served at (``None``: as fast
        as possible), like a CDN that limits every connection's rate.
    """

    def __init__(
        self,
        token: str | Iterable[str] = DEFAULT_TOKEN,
        *,
        plan: JobPlan | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        max_log_entries: int = DEFAULT_MAX_LOG_ENTRIES,
        download_rate_limit: int | None = None,
    ) -> None:
        if download_rate_limit is not None and download_rate_limit < 1:
            raise ValueError(
                "download_rate_limit must be a positive number of bytes per second, got "
                f"{download_rate_limit!r}"
            )
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
        if max_log_entries < 1:
            raise ValueError(f"max_log_entries must be at least 1, got {max_log_entries!r}")
        tokens = [token] if isinstance(token, str) else list(token)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("at least one non-empty token is needed")
        self._lock = threading.Lock()
        self._initial_tokens = tuple(tokens)
        self._initial_plan = plan or JobPlan()
        self._initial_time_scale = time_scale
        self._initial_clock = clock
        self._seed = seed
        self.max_log_entries = max_log_entries
        self._initial_rate_limit = download_rate_limit
        self._init_mutable()

    def _init_mutable(self) -> None:
        self.time_scale = self._initial_time_scale
        self.clock = self._initial_clock
        self._tokens: dict[str, str] = {t: account_of(t) for t in self._initial_tokens}
        self._default_plan = self._initial_plan
        self._model_plans: dict[str, JobPlan] = {}
        self._next_plans: deque[JobPlan] = deque()
        self._faults: dict[int, _ActiveFault] = {}
        self._fault_ids = 0
        self._catalog = default_catalog()
        self._jobs: dict[str, _Job] = {}
        self._log: deque[RecordedRequest] = deque(maxlen=self.max_log_entries)
        self._counts: Counter[str] = Counter()
        self.random = random.Random(self._seed)
        self.pricing_enabled = True
        self.ranges_enabled = True
        self.download_rate_limit = self._initial_rate_limit

    def reset(self) -> None:
        """Forget every job, fault, plan, request, token and model added since creation; reset settings."""
        with self._lock:
            self._init_mutable()

    # -- tokens ------------------------------------------------------------------------------------------

    @property
    def tokens(self) -> frozenset[str]:
        """The accepted tokens."""
        with self._lock:
            return frozenset(self._tokens)

    def add_token(self, token: str) -> None:
        """
        Accept another token, as another account (its requests are foreign to the other tokens: 403).

        :param token: the bearer token.
        """
        if not token:
            raise ValueError("a token must be a non-empty string")
        with self._lock:
            self._tokens.setdefault(token, account_of(token))

    def remove_token(self, token: str) -> None:
        """
        Stop accepting a token (as if it were revoked: its calls get 401).

        :param token: the bearer token.
        """
        with self._lock:
            self._tokens.pop(token, None)

    def account_for(self, token: str | None) -> str | None:
        """
        Return the account of an accepted token, or ``None`` when the token is not accepted.

        :param token: the bearer token.
        """
        if token is None:
            return None
        with self._lock:
            return self._tokens.get(token)

    # -- plans -------------------------------------------------------------------------------------------

    @property
    def default_plan(self) -> JobPlan:
        """The plan of a submit that no queued or per-model plan claims."""
        with self._lock:
            return self._default_plan

    def set_plan(self, plan: JobPlan) -> None:
        """
        Replace the default plan (jobs already submitted keep theirs).

        :param plan: the new default plan.
        """
        with self._lock:
            self._default_plan = plan

    def set_model_plan(self, model_id: str, plan: JobPlan | None) -> None:
        """
        Set the plan of every submit to ``model_id``; ``None`` removes it.

        :param model_id: the model id.
        :param plan: the plan, or ``None``.
        """
        with self._lock:
            if plan is None:
                self._model_plans.pop(model_id, None)
            else:
                self._model_plans[model_id] = plan

    def plan_next(self, plan: JobPlan, count: int = 1) -> None:
        """
        Queue ``plan`` for the next ``count`` submits (any model), ahead of per-model and default plans.

        :param plan: the plan.
        :param count: how many submits it applies to.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._lock:
            self._next_plans.extend([plan] * count)

    def pending_plans(self) -> list[JobPlan]:
        """Return the plans queued for the next submits, first first."""
        with self._lock:
            return list(self._next_plans)

    def model_plans(self) -> dict[str, JobPlan]:
        """Return the per-model plans."""
        with self._lock:
            return dict(self._model_plans)

    def _resolve_plan(self, model_id: str) -> JobPlan:
        if self._next_plans:
            return self._next_plans.popleft()
        return self._model_plans.get(model_id, self._default_plan)

    # -- catalog -----------------------------------------------------------------------------------------

    def register_model(
        self,
        model_id: str,
        *,
        base_price_usd: float | None = 0.05,
        price_unit: str = "second",
        display_name: str | None = None,
        **extra: Any,
    ) -> None:
        """
        Add (or replace) a model in the catalog, so it can be submitted to and priced.

        :param model_id: the model id, slash-separated segments.
        :param base_price_usd: the price per ``price_unit``; ``None`` leaves it out of the catalog answer.
        :param price_unit: ``second`` (per second of video) or ``output`` (per video); any other string is
            served as is, to test clients against units they do not know.
        :param display_name: the human name (defaults to the id).
        :param extra: more keys for the catalog answer.
        """
        if not MODEL_ID_PATTERN.match(model_id):
            raise ValueError(f"not a valid model id: {model_id!r}")
        entry = _entry(model_id, display_name or model_id, base_price_usd, price_unit, **extra)
        with self._lock:
            self._catalog[model_id] = entry

    def unregister_model(self, model_id: str) -> None:
        """
        Remove a model from the catalog (submits to it then fail with 400001).

        :param model_id: the model id.
        """
        with self._lock:
            self._catalog.pop(model_id, None)

    def model_info(self, model_id: str) -> dict[str, Any] | None:
        """
        Return the catalog entry of ``model_id`` (a copy), or ``None`` when the catalog does not have it.

        :param model_id: the model id.
        """
        with self._lock:
            entry = self._catalog.get(model_id)
            return dict(entry) if entry is not None else None

    def models(self) -> list[str]:
        """Return every model id in the catalog."""
        with self._lock:
            return list(self._catalog)

    # -- faults ------------------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> int:
        """
        Add a fault after the existing ones and return its id (the fault object itself is never modified).

        :param fault: the fault.
        """
        with self._lock:
            self._fault_ids += 1
            self._faults[self._fault_ids] = _ActiveFault(fault, fault.times, fault.skip)
            return self._fault_ids

    def remove_fault(self, fault_id: int) -> bool:
        """
        Remove one fault; return whether it was still there.

        :param fault_id: the id :meth:`add_fault` returned.
        """
        with self._lock:
            return self._faults.pop(fault_id, None) is not None

    def clear_faults(self) -> int:
        """Remove every fault; return how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def faults(self) -> dict[int, Fault]:
        """Return the active faults by id, in order, with ``times``/``skip`` showing what is left of them."""
        with self._lock:
            return {fault_id: active.view() for fault_id, active in self._faults.items()}

    def take_fault(
        self, endpoint: str, model_id: str | None = None, request_id: str | None = None
    ) -> Fault | None:
        """
        Return the fault to apply to this call, if any, and count it against the fault's ``times``.

        :param endpoint: the endpoint called.
        :param model_id: the model the call is about, if known.
        :param request_id: the request the call is about, if any.
        """
        with self._lock:
            if not self._faults:
                return None
            for fault_id, active in list(self._faults.items()):
                fault = active.fault
                if not fault.matches(endpoint, model_id, request_id):
                    continue
                if active.skip_left > 0:
                    active.skip_left -= 1
                    continue
                if fault.probability is not None and self.random.random() >= fault.probability:
                    continue
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining <= 0:
                        del self._faults[fault_id]
                return fault
            return None

    # -- jobs --------------------------------------------------------------------------------------------

    def submit(self, model_id: str, body: Mapping[str, Any], token: str) -> JobSnapshot:
        """
        Create a job for an accepted submit and return it.

        :param model_id: the model id.
        :param body: the input fields.
        :param token: the submitting token (its account owns the job).
        """
        created_wall = time.time()
        with self._lock:
            account = self._tokens.get(token)
            if account is None:
                raise PermissionError("the token is not accepted by this emulator")
            plan = self._resolve_plan(model_id)
            outcome = plan.outcome
            if (
                outcome == "succeed"
                and plan.fail_probability > 0
                and self.random.random() < plan.fail_probability
            ):
                outcome = "fail"
            now = self.clock()
            queue_end = now + plan.queue_seconds * self.time_scale
            job = _Job(
                request_id=uuid.uuid4().hex,
                model_id=model_id,
                account=account,
                body=dict(body),
                plan=plan,
                outcome=outcome,
                created_mono=now,
                created_wall=created_wall,
                queue_end=queue_end,
                run_end=queue_end + plan.run_seconds * self.time_scale,
                cost_usd=self._price(model_id, body, plan),
                hidden_until=now + plan.not_found_seconds * self.time_scale,
            )
            self._jobs[job.request_id] = job
            return self._snapshot(job, now)

    def _price(self, model_id: str, body: Mapping[str, Any], plan: JobPlan) -> float | None:
        if plan.cost_usd is not None:
            return plan.cost_usd
        entry = self._catalog.get(model_id) or {}
        price = entry.get("base_price_usd")
        if not isinstance(price, (int, float)):
            return None
        if entry.get("price_unit") == "second":
            return round(price * _duration_seconds(body), COST_DECIMALS)
        return round(price * max(1, plan.num_videos), COST_DECIMALS)

    def _snapshot(self, job: _Job, now: float) -> JobSnapshot:
        position: int | None = None
        finished: float | None = None
        phase: Phase
        if job.cancelled_mono is not None:
            phase, finished = "cancelled", job.cancelled_mono
        elif job.outcome == "stuck_in_queue" or now < job.queue_end:
            phase = "in_queue"
            position = _queue_position(
                job.plan.initial_queue_position, job.queue_end - job.created_mono, now - job.created_mono
            )
        elif job.outcome == "stuck_running" or now < job.run_end:
            phase = "in_progress"
        else:
            phase = "succeeded" if job.outcome == "succeed" else "failed"
            finished = job.run_end
        if phase == "succeeded" or (phase == "failed" and job.plan.cost_usd is not None):
            cost = job.cost_usd
        else:
            cost = 0.0 if finished is not None else None
        return JobSnapshot(
            request_id=job.request_id,
            model_id=job.model_id,
            account=job.account,
            phase=phase,
            queue_position=position,
            created_at=job.created_wall,
            finished_at=None if finished is None else job.created_wall + (finished - job.created_mono),
            plan=job.plan,
            outcome=job.outcome,
            body=job.body,
            cost_usd=cost,
            hidden=now < job.hidden_until,
        )

    def _lookup(self, request_id: str, token: str | None) -> _Job:
        job = self._jobs.get(request_id)
        if job is None:
            raise UnknownRequestError(request_id)
        if token is not None and self._tokens.get(token) != job.account:
            raise ForeignRequestError(request_id)
        return job

    def get_job(self, request_id: str, token: str | None = None) -> JobSnapshot:
        """
        Return the job as it is now.

        :param request_id: the request id.
        :param token: when given, raise :class:`ForeignRequestError` unless this token's account owns the job.
        """
        with self._lock:
            return self._snapshot(self._lookup(request_id, token), self.clock())

    def model_of(self, request_id: str) -> str | None:
        """
        Return the model a request was submitted to, or ``None`` for an unknown request.

        :param request_id: the request id.
        """
        with self._lock:
            job = self._jobs.get(request_id)
            return job.model_id if job is not None else None

    def cancel(self, request_id: str, token: str | None = None) -> tuple[JobSnapshot, bool]:
        """
        Cancel a queued job (running and finished ones are left alone); return it and whether it is cancelled.

        Cancelling is idempotent: a job already cancelled reports ``True`` again, so a client that retries a
        cancel whose answer was lost learns the truth instead of ``not_cancellable``.

        :param request_id: the request id.
        :param token: when given, raise :class:`ForeignRequestError` unless this token's account owns the job.
        """
        with self._lock:
            job = self._lookup(request_id, token)
            now = self.clock()
            phase = self._snapshot(job, now).phase
            if phase == "in_queue":
                job.cancelled_mono = now
            return self._snapshot(job, now), phase in ("in_queue", "cancelled")

    def job_count(self) -> int:
        """Return how many jobs were submitted since the last reset."""
        with self._lock:
            return len(self._jobs)

    def jobs(self) -> list[JobSnapshot]:
        """Return every job, oldest first, as it is now."""
        with self._lock:
            now = self.clock()
            return [self._snapshot(job, now) for job in self._jobs.values()]

    # -- request log -------------------------------------------------------------------------------------

    def record(self, entry: RecordedRequest) -> RecordedRequest:
        """
        Append a request to the log and count it; return it (the server fills in its answer later).

        :param entry: the request.
        """
        with self._lock:
            self._log.append(entry)
            self._counts[entry.endpoint] += 1
        return entry

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """
        Return the logged requests, oldest first (at most ``max_log_entries``).

        :param endpoint: only this endpoint's requests.
        """
        with self._lock:
            if endpoint is None:
                return list(self._log)
            return [entry for entry in self._log if entry.endpoint == endpoint]

    def count(self, endpoint: str | None = None) -> int:
        """
        Return how many requests arrived since the last reset; exact even when the log dropped old entries.

        :param endpoint: only this endpoint's requests.
        """
        with self._lock:
            return self._counts[endpoint] if endpoint is not None else sum(self._counts.values())

    def submits(self) -> list[RecordedRequest]:
        """Return the logged submit requests (each may have created, and billed, a job)."""
        return self.requests("submit")


__all__ = [
    "DEFAULT_TOKEN",
    "EmulatorState",
    "Fault",
    "ForeignRequestError",
    "JobPlan",
    "JobSnapshot",
    "RecordedRequest",
    "UnknownRequestError",
    "account_of",
    "default_catalog",
    "iso_timestamp",
]
