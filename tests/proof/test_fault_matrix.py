"""The fault matrix: every fault the API, the CDN or S3 can throw, at each phase, through real Airflow.

One ``dag.test()`` runs every case as its own task (or generate >> store pair): real HTTP against the
emulator, the real trigger (deferrable cases) or the worker poll loop (sync cases), real task retries
(``retries=2`` on every task), moto for S3. Each case has its own model id, which scopes its fault and job
plan in the emulator, so the cases are independent. The tests below then check, case by case, what a user
would see: the task state, how many tries it took, the exception of the first failed try (type and
message), how many submit POSTs the emulator received and how many jobs it started (billable), and for
transfers what is left in the bucket.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import pytest
from airflow.sdk import DAG

from airflow_provider_seedance import lifecycle
from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceAuthenticationError,
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceError,
    SeedanceInsufficientBalanceError,
    SeedanceRateLimitError,
    SeedanceRequestFailedError,
    SeedanceSubmissionStateUnknownError,
    SeedanceTimeoutError,
    SeedanceTransferError,
)
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import Fault, JobPlan
from airflow_provider_seedance.transfers._streaming import DEFAULT_DOWNLOAD_MAX_RESUMES
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests.operators._dag_support import IMAGE, START, run_dag, task_instances, unique_dag_id, xcom
from tests.proof._support import (
    BUCKET,
    FAST,
    NEWLINE_TOKEN_CONN_ID,
    NEWLINE_TOKEN_PARTS,
    SLOW_CONN_ID,
    SLOW_FAULT_SECONDS,
    ErrorLog,
    TryError,
    UploadPartFaults,
    calls_of,
    exception_texts,
    jobs_of,
    min_gap_after_fault,
    moto_bucket,
    occurrences,
    s3_leftovers,
    s3_objects,
    served_sha256,
)

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

pytestmark = pytest.mark.usefixtures("airflow_db")

MODEL_PREFIX = "proof/matrix"
MiB = 1024 * 1024
BIG_VIDEO = 6 * MiB
PART_SIZE = 5 * MiB
"""Above the 5 MiB part size: copied as a staged multipart upload (the UploadPart cases)."""

RETRY_AFTER = 0.3
"""The ``Retry-After`` of the 429 cases: well above the fast connection's 0.05 s backoff."""

TASK_RETRIES = 2

NOT_FOUND_GRACE = 3.0
"""The matrix's read-after-write grace (``NOT_FOUND_GRACE_SECONDS``, 120 s in production), shortened so the
cases where 404 outlasts it ("gone") finish in seconds."""

LAG = 0.5
"""Read-after-write lag of the lag cases (``JobPlan.not_found_seconds``): well within the grace."""

RETRY_LAG = 2.0
"""Lag of the case whose first try fails while the API still answers 404: the retry meets it too."""


QUEUED_AT_FIRST_LOOK = JobPlan(queue_seconds=2.0, run_seconds=0.1)
"""The plan of the cases faulting a status read after the first: the job must still be queued when the
operator first looks (else it rightly never polls again), even on a machine loaded enough to stall a
task for a second between the submit and that look."""


def http(status: int, code: int | None = None, **kwargs: Any) -> Fault:
    """Return an ``http_error`` fault answering ``status`` (with RunComfy ``error_code`` ``code``)."""
    return Fault(kind="http_error", status_code=status, error_code=code, **kwargs)


def slow(**kwargs: Any) -> Fault:
    """Return a fault that answers after the 0.5 s call timeout of ``seedance_slow`` has passed."""
    return Fault(kind="slow", delay_seconds=SLOW_FAULT_SECONDS, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorCase:
    """
    One fault at one phase of a generation, and what the user must see.

    :param id: the case id (also its task id and the last segment of its model id).
    :param fault: the fault (its ``endpoint`` is the phase); ``None`` when the plan alone is the fault.
    :param state: the final task state.
    :param tries: the task's final try number (``retries=2``: 3 means every try failed).
    :param posts: submit POSTs the emulator received.
    :param jobs: jobs the emulator started (each one is a billable generation).
    :param error: the type of the first failed try's exception (``None``: no try failed).
    :param says: what that exception's message must contain.
    :param later: the type of the last try's exception, when it differs from ``error``.
    :param later_says: what that one's message must contain.
    :param no_task_retry: the failure is an ``AirflowFailException``: no Airflow retry, whatever ``retries``.
    :param names_request: the message names the request id.
    :param faulted: how many calls the fault hit (``None``: not checked).
    :param plan: the job plan.
    :param conn: the connection (``seedance_slow`` for read timeouts).
    :param deferrable: wait in the trigger (else the worker polls).
    :param timeout: the operator's deadline, seconds.
    :param replaced: every try after the first submits anew because the API called the stored request gone.
    :param max_try_seconds: the last try must take less than this (``None``: not checked).
    :param lagged: the API answered 404 (no fault: the plan's read-after-write lag) for the status reads.
    """

    id: str
    fault: Fault | None
    state: Literal["success", "failed"]
    tries: int
    posts: int
    jobs: int
    error: type[BaseException] | None = None
    says: tuple[str, ...] = ()
    later: type[BaseException] | None = None
    later_says: tuple[str, ...] = ()
    no_task_retry: bool = False
    names_request: bool = False
    faulted: int | None = None
    plan: JobPlan = FAST
    conn: str = "seedance_default"
    deferrable: bool = True
    timeout: float = 15.0
    replaced: bool = False
    max_try_seconds: float | None = None
    lagged: bool = False

    @property
    def model_id(self) -> str:
        """The case's own model id: scopes its fault and plan in the emulator."""
        return f"{MODEL_PREFIX}/{self.id}"

    @property
    def phase(self) -> str:
        """Where the fault strikes."""
        return self.fault.endpoint if self.fault is not None else "result"


def _state_unknown(case_id: str, fault: Fault, *, jobs: int, detail: str, **more: Any) -> OperatorCase:
    """
    A submit whose answer was lost or garbled: the first try fails, naming the ambiguity, and is not retried.

    :param case_id: the case id.
    :param fault: the fault of the submit.
    :param jobs: jobs the emulator started (the API may have created one).
    :param detail: what the message must also say about the failure.
    :param more: further :class:`OperatorCase` fields.
    """
    return OperatorCase(
        case_id,
        fault,
        "failed",
        tries=1,
        posts=1,
        jobs=jobs,
        error=SeedanceSubmissionStateUnknownError,
        says=("Submission state unknown", "NOT retried automatically", detail),
        no_task_retry=True,
        **more,
    )


def _submit_cases() -> list[OperatorCase]:
    cases = [
        # 429: nothing was created; the submit is not retried by the hook, an Airflow retry submits again.
        OperatorCase(
            "submit-429",
            http(429, retry_after=RETRY_AFTER, endpoint="submit"),
            "success",
            tries=2,
            posts=2,
            jobs=1,
            error=SeedanceRateLimitError,
            says=("Seedance submit failed: HTTP 429",),
            faulted=1,
        ),
        *[
            _state_unknown(
                f"submit-{status}",
                http(status, endpoint="submit"),
                jobs=0,
                detail=f"HTTP {status}",
                faulted=1,
            )
            for status in (500, 502, 503)
        ],
        # The answer is lost or garbled after the API may have created (and billed) a job: the ambiguous case.
        _state_unknown(
            "submit-drop", Fault(kind="drop", endpoint="submit"), jobs=1, detail="peer closed connection"
        ),
        # The emulator's slow fault waits before reading the body, so a client that gave up left no job;
        # the provider cannot know that, and reports the same ambiguity as for the other cases.
        _state_unknown(
            "submit-timeout", slow(endpoint="submit"), jobs=0, detail="timed out", conn=SLOW_CONN_ID
        ),
        _state_unknown(
            "submit-malformed",
            Fault(kind="malformed_json", endpoint="submit"),
            jobs=1,
            detail="not valid JSON",
        ),
        # An explicit error body (no job created): a definite refusal, so an Airflow retry may submit.
        OperatorCase(
            "submit-200-error",
            Fault(kind="error_200", endpoint="submit"),
            "success",
            tries=2,
            posts=2,
            jobs=1,
            error=SeedanceAPIError,
            says=("HTTP 200, error_code 500000",),
            faulted=1,
        ),
    ]
    # Permanent refusals: every try fails the same way (Airflow retries them; nothing is ever created).
    for case_id, fault, error, words in (
        ("submit-401", http(401, times=None), SeedanceAuthenticationError, ("HTTP 401", "API token")),
        (
            "submit-400004",
            http(400, 400004, times=None),
            SeedanceAuthenticationError,
            ("error_code 400004", "API token"),
        ),
        ("submit-402", http(402, times=None), SeedanceInsufficientBalanceError, ("HTTP 402", "balance")),
        (
            "submit-400002",
            http(400, 400002, times=None),
            SeedanceInsufficientBalanceError,
            ("error_code 400002", "balance"),
        ),
    ):
        cases.append(
            OperatorCase(
                case_id,
                fault.model_copy(update={"endpoint": "submit"}),
                "failed",
                tries=TASK_RETRIES + 1,
                posts=TASK_RETRIES + 1,
                jobs=0,
                error=error,
                says=words,
                faulted=TASK_RETRIES + 1,
            )
        )
    return cases


def _read_cases(endpoint: Literal["status", "result"]) -> list[OperatorCase]:
    """Faults of the status and result reads (``skip=1`` on status: the trigger's polls meet them)."""
    skip = 1 if endpoint == "status" else 0
    first: dict[str, Any] = {"endpoint": endpoint, "skip": skip}
    ok: dict[str, Any] = {"state": "success", "tries": 1, "posts": 1, "jobs": 1}
    reattached: dict[str, Any] = {
        "state": "success",
        "tries": 2,
        "posts": 1,
        "jobs": 1,
        "names_request": True,
    }
    cases = [
        OperatorCase(
            f"{endpoint}-429", http(429, retry_after=RETRY_AFTER, times=2, **first), faulted=2, **ok
        ),
        *[
            OperatorCase(f"{endpoint}-{status}", http(status, times=2, **first), faulted=2, **ok)
            for status in (500, 502, 503)
        ],
        OperatorCase(f"{endpoint}-drop", Fault(kind="drop", times=2, **first), faulted=2, **ok),
        OperatorCase(f"{endpoint}-timeout", slow(times=1, **first), faulted=1, conn=SLOW_CONN_ID, **ok),
        OperatorCase(
            f"{endpoint}-malformed", Fault(kind="malformed_json", times=2, **first), faulted=2, **ok
        ),
        # A permanent-looking answer fails the try; the Airflow retry re-attaches to the same request.
        OperatorCase(
            f"{endpoint}-200-error",
            Fault(kind="error_200", times=1, **first),
            error=SeedanceRequestFailedError,
            says=("could not be followed", "error_code 500000"),
            faulted=1,
            **reattached,
        ),
        # A 404 right after the submit (status), or right after the run was seen over (result), is the API's
        # read-after-write lag: polling goes on, nothing fails, nothing is submitted again.
        OperatorCase(f"{endpoint}-404001", http(404, 404001, times=1, **first), faulted=1, **ok),
        OperatorCase(
            f"{endpoint}-401",
            http(401, 400004, times=1, **first),
            error=SeedanceRequestFailedError,
            says=("HTTP 401", "API token"),
            faulted=1,
            **reattached,
        ),
        OperatorCase(
            f"{endpoint}-402",
            http(402, 400002, times=1, **first),
            error=SeedanceRequestFailedError,
            says=("HTTP 402", "balance"),
            faulted=1,
            **reattached,
        ),
    ]
    if endpoint == "status":
        cases = [replace(case, plan=QUEUED_AT_FIRST_LOOK) for case in cases]
        # Never taken as success: the provider reads /result, which still says queued/running, and waits.
        cases.append(
            OperatorCase("status-unknown", Fault(kind="unknown_status", endpoint="status", times=None), **ok)
        )
        # Read-after-write lag from the job plan: every read answers 404 for LAG s after the submit.
        cases.append(
            OperatorCase(
                "status-404-lag",
                None,
                plan=FAST.model_copy(update={"not_found_seconds": LAG}),
                lagged=True,
                **ok,
            )
        )
        # Try 1 fails (401 while polling) while the API still answers 404 for the request: the retry, within
        # the grace after the stored submit time, re-attaches instead of taking it as gone and paying again.
        cases.append(
            OperatorCase(
                "status-404-lag-retry",
                http(401, 400004, endpoint="status", times=1, skip=1),
                error=SeedanceRequestFailedError,
                says=("HTTP 401",),
                faulted=1,
                plan=FAST.model_copy(update={"not_found_seconds": RETRY_LAG}),
                lagged=True,
                **reattached,
            )
        )
        # The API keeps calling the request unknown/expired (404001) past the grace: each try takes it as
        # gone and, by design (SPEC: "submit again only when it failed or is gone"), submits a new one. The
        # one fault after which a retry pays again: documented in docs/reliability.md.
        cases.append(
            OperatorCase(
                "status-404001-always",
                http(404, 404001, endpoint="status", times=None, skip=1),
                "failed",
                tries=TASK_RETRIES + 1,
                posts=TASK_RETRIES + 1,
                jobs=TASK_RETRIES + 1,
                error=SeedanceRequestFailedError,
                says=("was not found by the API",),
                names_request=True,
                replaced=True,
            )
        )
        cases.append(_outage_past_the_deadline("status-503-always"))
    else:
        cases.append(
            OperatorCase(
                "result-unknown",
                Fault(kind="unknown_status", endpoint="result", times=None),
                "failed",
                tries=TASK_RETRIES + 1,
                posts=1,
                jobs=1,
                error=SeedanceRequestFailedError,
                says=("'mystery_state'", "not treating it as success"),
                later=SeedanceRequestFailedError,
                later_says=("'mystery_state'",),
                names_request=True,
            )
        )
        # The run ends "succeeded" with no video: the task succeeds with video_url None (SPEC: str | None).
        cases.append(
            OperatorCase("result-no-video", None, plan=FAST.model_copy(update={"num_videos": 0}), **ok)
        )
        # The API says the run failed: each try fails with the API's text. A failed run is not billed, and
        # a retry of a *failed* request submits a new one (SPEC): one job per try, none of them billed.
        cases.append(
            OperatorCase(
                "result-job-failed",
                None,
                "failed",
                tries=TASK_RETRIES + 1,
                posts=TASK_RETRIES + 1,
                jobs=TASK_RETRIES + 1,
                error=SeedanceRequestFailedError,
                says=("failed: content policy violation",),
                names_request=True,
                plan=FAST.model_copy(update={"outcome": "fail", "error": "content policy violation"}),
            )
        )
    return cases


def _outage_past_the_deadline(case_id: str, fault: Fault | None = None, **more: Any) -> OperatorCase:
    """
    An outage longer than the deadline: try 1 times out; later tries cannot read the stored request and
    refuse to submit a second one.

    :param case_id: the case id.
    :param fault: the outage (default: every status read answers 503).
    :param more: further :class:`OperatorCase` fields.
    """
    return OperatorCase(
        case_id,
        fault or http(503, endpoint="status", times=None),
        "failed",
        tries=TASK_RETRIES + 1,
        posts=1,
        jobs=1,
        error=SeedanceTimeoutError,
        says=("did not finish before its deadline",),
        later=SeedanceError,
        later_says=("Not submitting a second, paid request",),
        names_request=True,
        timeout=1.0,
        **more,
    )


def _sync_cases() -> list[OperatorCase]:
    """The same faults met by the worker's own poll loop (``deferrable=False``)."""
    polled: dict[str, Any] = {"state": "success", "tries": 1, "posts": 1, "jobs": 1, "deferrable": False}
    return [
        OperatorCase(
            "sync-status-503",
            http(503, endpoint="status", times=2, skip=1),
            faulted=2,
            plan=QUEUED_AT_FIRST_LOOK,
            **polled,
        ),
        OperatorCase("sync-result-drop", Fault(kind="drop", endpoint="result", times=2), faulted=2, **polled),
        OperatorCase(
            "sync-status-404001",
            http(404, 404001, endpoint="status", times=1, skip=1),
            faulted=1,
            plan=QUEUED_AT_FIRST_LOOK,
            **polled,
        ),
        OperatorCase(
            "sync-status-404-lag",
            None,
            plan=FAST.model_copy(update={"not_found_seconds": LAG}),
            lagged=True,
            **polled,
        ),
        _outage_past_the_deadline("sync-status-503-always", deferrable=False),
    ]


def _billing_cases() -> list[OperatorCase]:
    """Answers that read like errors although a request was created, a token HTTP cannot carry, a deadline."""
    created: dict[str, Any] = {"state": "success", "tries": 1, "posts": 1, "jobs": 1, "faulted": 1}
    return [
        # A 2xx naming a request id is a created request, whatever else it says: followed, never paid twice.
        OperatorCase("submit-200-id-error", Fault(kind="payload_with_error", endpoint="submit"), **created),
        OperatorCase(
            "submit-200-id-code",
            Fault(kind="payload_with_error", endpoint="submit", body={"code": 500, "message": "internal"}),
            **created,
        ),
        OperatorCase(
            "sync-submit-200-id-error",
            Fault(kind="payload_with_error", endpoint="submit"),
            deferrable=False,
            **created,
        ),
        # An error status naming a request id: that request may exist; state unknown, naming it, no retry.
        OperatorCase(
            "submit-500-id",
            Fault(kind="payload_with_error", endpoint="submit", status_code=500),
            "failed",
            tries=1,
            posts=1,
            jobs=1,
            error=SeedanceSubmissionStateUnknownError,
            says=("Submission state unknown", "HTTP 500", "NOT submitted again"),
            no_task_retry=True,
            names_request=True,
            faulted=1,
        ),
        # A token with a line break inside: refused when the connection is read, before anything is sent.
        OperatorCase(
            "submit-newline-token",
            None,
            "failed",
            tries=1,
            posts=0,
            jobs=0,
            error=SeedanceConfigurationError,
            says=("the API token contains a line break", "Nothing was sent"),
            no_task_retry=True,
            conn=NEWLINE_TOKEN_CONN_ID,
        ),
        # Retry-After: 20 on every status read, in the worker with a 1 s timeout: no wait crosses the
        # deadline, so each try ends in about a second instead of minutes.
        _outage_past_the_deadline(
            "sync-status-429-past-deadline",
            http(429, retry_after=20, endpoint="status", times=None, skip=1),
            deferrable=False,
            max_try_seconds=10.0,
        ),
    ]


OPERATOR_CASES = [
    *_submit_cases(),
    *_read_cases("status"),
    *_read_cases("result"),
    *_sync_cases(),
    *_billing_cases(),
]


@dataclass(frozen=True)
class TransferCase:
    """
    One fault while copying a generated video to S3 (generate >> store), and what the user must see.

    :param id: the case id.
    :param fault: a fault of the download (``None``: the plan or S3 is the fault).
    :param state: the final state of the store task.
    :param tries: its final try number.
    :param error: the first failed try's exception type.
    :param says: what its message must contain.
    :param faulted: how many downloads the fault hit (``None``: not checked).
    :param upload_part_failures: UploadPart calls to fail for this case (``None``: all of them; 0: none).
    :param plan: the job plan.
    :param download_timeout: the store task's ``download_timeout``.
    :param download_max_resumes: the store task's ``download_max_resumes``.
    :param more_faults: faults armed after ``fault`` (the first matching one hits a call).
    """

    id: str
    fault: Fault | None
    state: Literal["success", "failed"]
    tries: int = 1
    error: type[BaseException] | None = None
    says: tuple[str, ...] = ()
    faulted: int | None = None
    upload_part_failures: int | None = 0
    plan: JobPlan = FAST
    download_timeout: float = 5.0
    download_max_resumes: int = DEFAULT_DOWNLOAD_MAX_RESUMES
    more_faults: tuple[Fault, ...] = ()

    @property
    def model_id(self) -> str:
        """The case's own model id."""
        return f"{MODEL_PREFIX}/{self.id}"

    @property
    def key(self) -> str:
        """The S3 key the case copies to."""
        return f"matrix/{self.id}/clip.mp4"


def _transfer_cases() -> list[TransferCase]:
    big = FAST.model_copy(update={"video_size_bytes": BIG_VIDEO})
    every_try = TASK_RETRIES + 1
    return [
        TransferCase(
            "download-429",
            http(429, retry_after=RETRY_AFTER, endpoint="download", times=2),
            "success",
            faulted=2,
        ),
        *[
            TransferCase(f"download-{s}", http(s, endpoint="download", times=2), "success", faulted=2)
            for s in (500, 502, 503)
        ],
        TransferCase("download-drop", Fault(kind="drop", endpoint="download", times=2), "success", faulted=2),
        # /result says "completed" with the output (not "succeeded"): the generation and the copy both take it
        # as the success it is (one success rule).
        TransferCase(
            "result-completed",
            None,
            "success",
            plan=FAST.model_copy(update={"succeeded_status_on_result_endpoint": "completed"}),
        ),
        TransferCase(
            "download-timeout", slow(endpoint="download", times=1), "success", faulted=1, download_timeout=0.5
        ),
        # Cut mid-body once: the download resumes with a Range request and the copy is complete.
        TransferCase(
            "download-truncated", Fault(kind="truncated", endpoint="download", times=1), "success", faulted=1
        ),
        # A CDN that streams without Content-Length and caps every range: the first answer breaks, each 206
        # names the total but carries 1 KiB; the copy follows them to the total (never a short copy).
        TransferCase(
            "download-capped-ranges",
            Fault(kind="truncated", endpoint="download", hide_length=True, truncate_fraction=0.3, times=1),
            "success",
            more_faults=(Fault(kind="capped_range", endpoint="download", cap_bytes=1024, times=None),),
        ),
        # A file of two parts, fetched in parallel ranges: the first GET only announces it, the next (a
        # part) is cut halfway and resumes inside that part.
        TransferCase(
            "download-truncated-parallel",
            Fault(kind="truncated", endpoint="download", times=2),
            "success",
            faulted=2,
            plan=big,
        ),
        # Cut on every request: each resume gets part of the rest, the last byte never comes; the copy fails.
        TransferCase(
            "download-truncated-always",
            Fault(kind="truncated", endpoint="download", times=None),
            "failed",
            tries=every_try,
            # Each interruption waits a growing backoff (up to a minute): a few show the rule in seconds.
            download_max_resumes=4,
            error=SeedanceConnectionError,
            says=("Download of",),
        ),
        # The output link expired: not retried within the try (it will not come back), nothing is stored.
        TransferCase(
            "download-404001",
            http(404, 404001, endpoint="download", times=None),
            "failed",
            tries=every_try,
            error=SeedanceTransferError,
            says=("HTTP 404", "link may have expired"),
            faulted=every_try,
        ),
        TransferCase(
            "s3-upload-part-once",
            None,
            "success",
            tries=2,
            error=SeedanceTransferError,
            # The parts of the two-part file are fetched in parallel: whichever is uploaded first fails.
            says=("UploadPart", "failed", "InternalError"),
            upload_part_failures=1,
            plan=big,
        ),
        TransferCase(
            "s3-upload-part-always",
            None,
            "failed",
            tries=every_try,
            error=SeedanceTransferError,
            says=("UploadPart", "InternalError"),
            upload_part_failures=None,
            plan=big,
        ),
        TransferCase(
            "no-video",
            None,
            "failed",
            tries=every_try,
            error=SeedanceTransferError,
            says=("succeeded but its output has no video", "nothing to copy"),
            plan=FAST.model_copy(update={"num_videos": 0}),
        ),
    ]


TRANSFER_CASES = _transfer_cases()


# ---------------------------------------------------------------------------------------------------------
# One dag.test() for the whole matrix
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MatrixRun:
    """The finished matrix run: its DAG run, task instances, exceptions per try, emulator and bucket."""

    dag_run: Any
    tis: dict[str, Any]
    errors: ErrorLog
    emulator: SeedanceEmulator
    s3: Any
    upload_faults: UploadPartFaults

    def failures(self, task_id: str) -> list[TryError]:
        """Return the exceptions of the task's failed tries, first try first."""
        return self.errors.of(self.dag_run.dag_id, task_id)


def _arm(emulator: SeedanceEmulator, model_id: str, fault: Fault | None, plan: JobPlan) -> None:
    """Register a case's model and scope its plan and fault to it."""
    emulator.state.register_model(model_id)
    emulator.set_model_plan(model_id, plan)
    if fault is not None:
        emulator.add_fault(fault.model_copy(update={"model_id": model_id}))


@pytest.fixture(scope="module")
def matrix(module_emulator: SeedanceEmulator, module_patch: pytest.MonkeyPatch) -> Iterator[MatrixRun]:
    """Arm every case in the emulator (and S3), run the whole matrix as one DAG with dag.test()."""
    emulator = module_emulator
    errors = ErrorLog()
    upload_faults = UploadPartFaults(
        {f"matrix/{c.id}/": c.upload_part_failures for c in TRANSFER_CASES if c.upload_part_failures != 0}
    )
    upload_faults.install(module_patch)
    module_patch.setattr(lifecycle, "NOT_FOUND_GRACE_SECONDS", NOT_FOUND_GRACE)
    callbacks: dict[str, Any] = {
        "retries": TASK_RETRIES,
        "retry_delay": timedelta(0),
        "on_retry_callback": errors.callback,
        "on_failure_callback": errors.callback,
    }
    with moto_bucket() as s3:
        with DAG(unique_dag_id("proof_fault_matrix"), schedule=None, start_date=START) as dag:
            for case in OPERATOR_CASES:
                _arm(emulator, case.model_id, case.fault, case.plan)
                SeedanceImageToVideoOperator(
                    task_id=case.id,
                    model_id=case.model_id,
                    prompt=f"Fault matrix case {case.id}",
                    first_frame_image_url=IMAGE,
                    seedance_conn_id=case.conn,
                    deferrable=case.deferrable,
                    poll_interval=0.1,
                    timeout=case.timeout,
                    **callbacks,
                )
            for tcase in TRANSFER_CASES:
                _arm(emulator, tcase.model_id, tcase.fault, tcase.plan)
                for more in tcase.more_faults:
                    emulator.add_fault(more.model_copy(update={"model_id": tcase.model_id}))
                generate = SeedanceImageToVideoOperator(
                    task_id=f"gen-{tcase.id}",
                    model_id=tcase.model_id,
                    prompt=f"Fault matrix transfer case {tcase.id}",
                    first_frame_image_url=IMAGE,
                    poll_interval=0.1,
                    timeout=15,
                )
                store = SeedanceToS3Operator(
                    task_id=f"store-{tcase.id}",
                    request_id=f"{{{{ ti.xcom_pull(task_ids='gen-{tcase.id}', key='request_id') }}}}",
                    dest_bucket=BUCKET,
                    dest_key=tcase.key,
                    aws_conn_id=None,
                    part_size=PART_SIZE,
                    download_timeout=tcase.download_timeout,
                    download_max_resumes=tcase.download_max_resumes,
                    download_max_retries=2,
                    download_retry_backoff=0.05,
                    **callbacks,
                )
                generate >> store
        dag_run = run_dag(dag)
        tis = {task_id: ti for (task_id, _), ti in task_instances(dag_run).items()}
        yield MatrixRun(dag_run, tis, errors, emulator, s3, upload_faults)


# ---------------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------------


def _check_failures(
    failures: list[TryError],
    *,
    tries: int,
    state: str,
    error: type[BaseException] | None,
    says: tuple[str, ...],
    later: type[BaseException] | None,
    later_says: tuple[str, ...],
) -> TryError | None:
    """Check the exceptions of the failed tries; return the first one."""
    expected_failed_tries = tries if state == "failed" else tries - 1
    assert [f.try_number for f in failures] == list(range(1, expected_failed_tries + 1))
    if error is None:
        return None
    first = failures[0]
    assert type(first.error) is error, first.text
    for words in says:
        assert words in first.text
    last = failures[-1]
    assert type(last.error) is (later or error), last.text
    for words in later_says:
        assert words in last.text
    for failure in failures:
        assert failure.text.strip()
    return first


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=lambda case: case.id)
def test_generation_fault(matrix: MatrixRun, case: OperatorCase) -> None:
    """Each fault at submit/status/result: the task outcome, its messages and the submits the API saw."""
    ti = matrix.tis[case.id]
    assert str(ti.state) == case.state
    assert ti.try_number == case.tries
    if case.max_try_seconds is not None:
        assert (ti.end_date - ti.start_date).total_seconds() < case.max_try_seconds

    posts = calls_of(matrix.emulator, "submit", case.model_id)
    jobs = jobs_of(matrix.emulator, case.model_id)
    assert len(posts) == case.posts
    assert len(jobs) == case.jobs
    if case.jobs > 1 and not case.replaced:
        # Only a request the API reported as failed is ever replaced, and a failed run is not billed.
        assert {job.phase for job in jobs} == {"failed"}
        assert {job.cost_usd for job in jobs} == {0.0}
    if case.faulted is not None:
        hit = [r for r in calls_of(matrix.emulator, case.phase, case.model_id) if r.fault]
        assert len(hit) == case.faulted
    lag = [
        r for r in calls_of(matrix.emulator, "status", case.model_id) if r.status_code == 404 and not r.fault
    ]
    assert bool(lag) is case.lagged

    first = _check_failures(
        matrix.failures(case.id),
        tries=case.tries,
        state=case.state,
        error=case.error,
        says=case.says,
        later=case.later,
        later_says=case.later_says,
    )
    if first is not None:
        from airflow.providers.common.compat.sdk import AirflowFailException

        assert isinstance(first.error, SeedanceError)
        assert isinstance(first.error, AirflowFailException) is case.no_task_retry
        if case.names_request:
            assert jobs[0].request_id in first.text
        if case.phase == "submit":
            # A submit is never retried by the hook, and no message may claim otherwise.
            assert "retried with backoff" not in first.text
        if case.error is SeedanceSubmissionStateUnknownError:
            assert case.model_id in first.text

    if case.state == "success":
        result = xcom(matrix.dag_run, case.id)
        assert result["status"] == "succeeded"
        assert result["request_id"] == jobs[-1].request_id
        if case.plan.num_videos:
            assert result["video_url"] == f"{matrix.emulator.base_url}/files/{jobs[-1].request_id}/0.mp4"
        else:
            assert (result["video_url"], result["video_urls"]) == (None, [])


def test_a_token_with_a_newline_leaves_no_trace(matrix: MatrixRun) -> None:
    """The refused token is quoted nowhere in the failure: message, repr, attributes, traceback, causes."""
    [failure] = matrix.failures("submit-newline-token")
    texts = exception_texts(failure.error)
    for part in NEWLINE_TOKEN_PARTS:
        assert occurrences(texts, part) == []
    assert "Bearer" not in "".join(texts)


@pytest.mark.parametrize(
    "case", [c for c in OPERATOR_CASES if c.id.endswith("-429") and c.phase != "submit"], ids=lambda c: c.id
)
def test_retry_after_is_honoured(matrix: MatrixRun, case: OperatorCase) -> None:
    """After a 429 with ``Retry-After: 0.3`` the next read waits that long (backoff alone is 0.05 s)."""
    [job] = jobs_of(matrix.emulator, case.model_id)
    calls = [
        r for r in calls_of(matrix.emulator, case.phase, case.model_id) if r.request_id == job.request_id
    ]
    gap = min_gap_after_fault(calls)
    assert gap is not None
    assert gap >= RETRY_AFTER


@pytest.mark.parametrize("case", TRANSFER_CASES, ids=lambda case: case.id)
def test_transfer_fault(matrix: MatrixRun, case: TransferCase) -> None:
    """Each fault of the download or the S3 upload: the store outcome, its messages, nothing partial left."""
    generate = matrix.tis[f"gen-{case.id}"]
    store = matrix.tis[f"store-{case.id}"]
    assert str(generate.state) == "success"
    assert (generate.try_number, len(jobs_of(matrix.emulator, case.model_id))) == (1, 1)
    # Retrying the copy never submits again.
    assert len(calls_of(matrix.emulator, "submit", case.model_id)) == 1
    assert str(store.state) == case.state
    assert store.try_number == case.tries

    first = _check_failures(
        matrix.failures(f"store-{case.id}"),
        tries=case.tries,
        state=case.state,
        error=case.error,
        says=case.says,
        later=None,
        later_says=(),
    )
    if first is not None:
        assert isinstance(first.error, SeedanceError)
    if case.faulted is not None:
        hit = [r for r in calls_of(matrix.emulator, "download", case.model_id) if r.fault]
        assert len(hit) == case.faulted

    # Nothing partial, unverified or unfinished under the case's prefix; the object only when it succeeded.
    prefix = f"matrix/{case.id}/"
    leftovers = s3_leftovers(matrix.s3, BUCKET, prefix, served=[served_sha256(case.plan.video_size_bytes)])
    assert (leftovers.unverified, leftovers.uploads) == ([], [])
    if case.state == "failed":
        assert s3_objects(matrix.s3, BUCKET, prefix) == []
        return
    assert s3_objects(matrix.s3, BUCKET, prefix) == [case.key]
    size, digest = served_sha256(case.plan.video_size_bytes)
    answer = matrix.s3.get_object(Bucket=BUCKET, Key=case.key)
    body = answer["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (size, digest)
    head = answer
    # One part: sha256 metadata; larger: one pass, its SHA-256 reported in XCom instead.
    assert head["Metadata"].get("sha256") == (digest if size <= PART_SIZE else None)
    [copied] = xcom(matrix.dag_run, f"store-{case.id}", key="objects")
    assert copied["sha256"] == digest
    [job] = jobs_of(matrix.emulator, case.model_id)
    assert xcom(matrix.dag_run, f"store-{case.id}") == [f"s3://{BUCKET}/{case.key}"]
    assert head["Metadata"]["seedance-request-id"] == job.request_id


def test_truncated_download_resumes_with_a_range(matrix: MatrixRun) -> None:
    """The cut download is resumed from the byte it stopped at, not downloaded again from byte 0."""
    downloads = calls_of(matrix.emulator, "download", f"{MODEL_PREFIX}/download-truncated")
    assert [bool(r.fault) for r in downloads] == [True, False]
    assert "range" not in downloads[0].headers
    assert downloads[1].headers["range"].startswith("bytes=")
    assert int(downloads[1].headers["range"].removeprefix("bytes=").rstrip("-")) > 0


def test_upload_part_faults_really_struck(matrix: MatrixRun) -> None:
    """The S3 cases failed where intended: one UploadPart for the 'once' case, every one for 'always'."""
    once = [k for k in matrix.upload_faults.failed if k.startswith("matrix/s3-upload-part-once/")]
    always = [k for k in matrix.upload_faults.failed if k.startswith("matrix/s3-upload-part-always/")]
    assert len(once) == 1
    # Every try failed; its two parts are uploaded in parallel, so one or both of them met the fault.
    assert TASK_RETRIES + 1 <= len(always) <= 2 * (TASK_RETRIES + 1)


def test_the_bucket_holds_only_verified_copies(matrix: MatrixRun) -> None:
    """Across the whole matrix: every object is a verified copy, no staging object, no open upload."""
    leftovers = s3_leftovers(
        matrix.s3, served=[served_sha256(c.plan.video_size_bytes) for c in TRANSFER_CASES]
    )
    assert leftovers.count == 0
    expected = sorted(c.key for c in TRANSFER_CASES if c.state == "success")
    assert s3_objects(matrix.s3) == expected


def test_capped_ranges_are_followed_to_the_total(matrix: MatrixRun) -> None:
    """After the unsized answer broke, every capped 206 is followed by a request for the next range."""
    downloads = calls_of(matrix.emulator, "download", f"{MODEL_PREFIX}/download-capped-ranges")
    ranged = [r for r in downloads if "range" in r.headers]
    assert len(ranged) >= 2
    assert all(r.status_code == 206 for r in ranged)
    starts = [int(r.headers["range"].removeprefix("bytes=").rstrip("-")) for r in ranged]
    assert starts == sorted(starts)
    assert all(later - earlier == 1024 for earlier, later in itertools.pairwise(starts[1:]))
