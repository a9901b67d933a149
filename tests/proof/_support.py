"""Helpers of the proof suite: emulator setup, per-try exception capture, S3 leftovers, the token search.

The proof tests run real HTTP against the emulator, real Airflow (``dag.test()``) and moto for S3. Several
cases share one DAG run (one ``dag.test()`` costs ~0.5 s per task, the first one of a session ~20 s): each
case gets its own model id, and the emulator scopes the case's faults and job plan to that model id, so
the cases cannot disturb each other.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import traceback
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_seedance.testing import JobPlan
from tests._support import TEST_TOKEN, conn_json

if TYPE_CHECKING:
    import pytest

    from airflow_provider_seedance.testing import SeedanceEmulator

FAST = JobPlan(queue_seconds=0.05, run_seconds=0.1)
"""A job that is queued and runs for a fraction of a second."""

BUCKET = "seedance-proof"
"""The moto bucket the transfer cases copy into."""

SLOW_CONN_ID = "seedance_slow"
"""A connection with a 0.5 s per-call timeout, for the read-timeout cases (the fault waits 1.5 s)."""

SLOW_CALL_TIMEOUT = 0.5
SLOW_FAULT_SECONDS = 1.5

NEWLINE_TOKEN_CONN_ID = "seedance_newline_token"
"""A connection whose token has a line break inside (a bad paste): refused when read, never sent."""

NEWLINE_TOKEN_PARTS = ("sk-test-NEWLINE-a81f3c", "second-line-5d02e9")
NEWLINE_TOKEN = "\n".join(NEWLINE_TOKEN_PARTS)
"""The token of :data:`NEWLINE_TOKEN_CONN_ID`; leak checks search for each of its lines."""

STAGING_MARKER = ".seedance-staging/"


def set_connections(monkeypatch: pytest.MonkeyPatch, emulator: SeedanceEmulator) -> None:
    """
    Point ``seedance_default`` (fast retries) and ``seedance_slow`` (0.5 s timeout) at the emulator.

    :param monkeypatch: a (module-scoped) monkeypatch context.
    :param emulator: the running emulator.
    """
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator))
    monkeypatch.setenv(f"AIRFLOW_CONN_{SLOW_CONN_ID.upper()}", conn_json(emulator, timeout=SLOW_CALL_TIMEOUT))
    monkeypatch.setenv(f"AIRFLOW_CONN_{NEWLINE_TOKEN_CONN_ID.upper()}", newline_token_conn(emulator))
    # No aws_default connection: S3 clients use boto3's chain (the fake keys of tests/conftest.py) + moto.
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)


def newline_token_conn(emulator: SeedanceEmulator) -> str:
    """
    Return a JSON ``seedance`` connection for the emulator whose token is :data:`NEWLINE_TOKEN`.

    :param emulator: the running emulator.
    """
    fields = json.loads(conn_json(emulator))
    fields["password"] = NEWLINE_TOKEN
    return json.dumps(fields)


# ---------------------------------------------------------------------------------------------------------
# What each try of each task raised (dag.test() runs tasks in this process, callbacks included)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TryError:
    """
    The exception one try of a task ended with.

    :param try_number: the try.
    :param error: the exception.
    """

    try_number: int
    error: BaseException

    @property
    def text(self) -> str:
        """The exception's message."""
        return str(self.error)


@dataclass
class ErrorLog:
    """Collect, per ``(dag_id, task_id)``, the exception of every failed try (``on_retry``/``on_failure``)."""

    errors: dict[tuple[str, str], list[TryError]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __deepcopy__(self, memo: dict[int, Any]) -> ErrorLog:
        # Airflow 3.0's dag.test() deep-copies the DAG, callbacks included: every copy records here.
        return self

    def callback(self, context: Any) -> None:
        """
        Record the try's exception; used as both ``on_retry_callback`` and ``on_failure_callback``.

        :param context: the task context Airflow passes to callbacks.
        """
        ti = context["ti"]
        error = context.get("exception")
        if error is None:
            return
        with self._lock:
            self.errors.setdefault((ti.dag_id, ti.task_id), []).append(TryError(ti.try_number, error))

    def of(self, dag_id: str, task_id: str) -> list[TryError]:
        """
        Return the recorded failures of one task, first try first.

        :param dag_id: the DAG id.
        :param task_id: the task id.
        """
        return sorted(self.errors.get((dag_id, task_id), []), key=lambda item: item.try_number)

    def all_texts(self) -> list[str]:
        """Return every recorded exception as message, repr, attributes and traceback (with causes)."""
        texts: list[str] = []
        for items in self.errors.values():
            for item in items:
                texts.extend(exception_texts(item.error))
        return texts


def exception_texts(error: BaseException) -> list[str]:
    """
    Return everything an exception can show: message, repr, attributes, the traceback with its causes.

    :param error: the exception.
    """
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts.append(json.dumps({k: repr(v) for k, v in vars(error).items()}))
    seen: set[int] = set()
    inner = error.__cause__ or error.__context__
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        texts.extend([str(inner), repr(inner)])
        inner = inner.__cause__ or inner.__context__
    return texts


# ---------------------------------------------------------------------------------------------------------
# Emulator bookkeeping per model id
# ---------------------------------------------------------------------------------------------------------


def jobs_of(emulator: SeedanceEmulator, model_id: str) -> list[Any]:
    """
    Return the jobs the emulator created for ``model_id`` (each one a started, billable generation).

    :param emulator: the emulator.
    :param model_id: the model id.
    """
    return [job for job in emulator.state.jobs() if job.model_id == model_id]


def calls_of(emulator: SeedanceEmulator, endpoint: str, model_id: str) -> list[Any]:
    """
    Return the recorded calls to ``endpoint`` about ``model_id``, oldest first.

    :param emulator: the emulator.
    :param endpoint: ``submit``, ``status``, ``result``, ``cancel`` or ``download``.
    :param model_id: the model id (for request calls: the model the request was submitted to).
    """
    return [r for r in emulator.state.requests(endpoint) if r.model_id == model_id]


def min_gap_after_fault(calls: list[Any]) -> float | None:
    """
    Return the shortest delay between a faulted call and the call that followed it (``None``: no such pair).

    :param calls: recorded calls to one endpoint about one request, oldest first.
    """
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(calls) if a.fault]
    return min(gaps) if gaps else None


# ---------------------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------------------


@contextmanager
def moto_bucket(bucket: str = BUCKET) -> Iterator[Any]:
    """
    Run an in-process moto S3 with ``bucket`` and yield a boto3 client on it.

    :param bucket: the bucket to create.
    """
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield client


@dataclass(frozen=True)
class Leftovers:
    """
    What a bucket holds that a finished transfer must never leave behind.

    :param unverified: objects that are staging objects, or whose bytes do not match their ``sha256``
        metadata.
    :param uploads: keys of multipart uploads still open.
    """

    unverified: list[str]
    uploads: list[str]

    @property
    def count(self) -> int:
        """How many leftovers there are."""
        return len(self.unverified) + len(self.uploads)


def s3_objects(client: Any, bucket: str = BUCKET, prefix: str = "") -> list[str]:
    """
    Return every key under ``prefix`` (paginated).

    :param client: a boto3 S3 client.
    :param bucket: the bucket.
    :param prefix: the key prefix.
    """
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def s3_leftovers(
    client: Any, bucket: str = BUCKET, prefix: str = "", served: Collection[tuple[int, str]] = ()
) -> Leftovers:
    """
    Find partial or unverified objects and unfinished multipart uploads under ``prefix``.

    An object is verified when it is not a staging object and the SHA-256 of its bytes equals its ``sha256``
    metadata (which the operator writes only after the whole download was counted and hashed); an object
    without that metadata (a file larger than one part, copied in one pass) must carry ``source-url``
    metadata and be byte for byte one of the ``served`` files.

    :param client: a boto3 S3 client.
    :param bucket: the bucket.
    :param prefix: the key prefix.
    :param served: ``(size, sha256)`` of the files the source served (see :func:`served_sha256`).
    """
    unverified: list[str] = []
    for key in s3_objects(client, bucket, prefix):
        answer = client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        metadata = answer.get("Metadata", {})
        if "sha256" in metadata:
            verified = metadata["sha256"] == digest
        else:
            verified = "source-url" in metadata and (len(body), digest) in served
        if STAGING_MARKER in key or not verified:
            unverified.append(key)
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return Leftovers(unverified=unverified, uploads=sorted(u["Key"] for u in uploads))


def served_sha256(video_size_bytes: int | None) -> tuple[int, str]:
    """
    Return ``(size, sha256)`` of the file the emulator serves for a plan's ``video_size_bytes``.

    :param video_size_bytes: the plan's setting (``None``: the sample MP4).
    """
    from airflow_provider_seedance.testing.media import video_for

    body = video_for(video_size_bytes)
    digest = hashlib.sha256()
    for chunk in body.iter_range(0, body.size):
        digest.update(chunk)
    return body.size, digest.hexdigest()


class UploadPartFaults:
    """
    Fail S3 ``UploadPart`` calls for chosen key prefixes, through botocore's own event hooks.

    The real boto3 client (on moto) is kept; a ``before-parameter-build`` handler raises the ``ClientError``
    S3 would send for an internal error, before the part leaves the process.

    :param plan: key prefix -> how many UploadPart calls to fail (``None``: every one).
    :param chance: when given, fail any other UploadPart with this probability (a seeded ``random.Random``).
    """

    def __init__(
        self,
        plan: dict[str, int | None] | None = None,
        chance: tuple[float, Any] | None = None,
    ) -> None:
        self.plan = dict(plan or {})
        self.chance = chance
        self.failed: list[str] = []
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _should_fail(self, key: str) -> bool:
        with self._lock:
            self.calls.append(key)
            for prefix, left in self.plan.items():
                if key.startswith(prefix):
                    if left is None:
                        return True
                    if left > 0:
                        self.plan[prefix] = left - 1
                        return True
                    return False
            if self.chance is not None:
                probability, rng = self.chance
                return bool(rng.random() < probability)
            return False

    def handler(self, params: dict[str, Any], **_: Any) -> None:
        """
        Raise an S3 ``InternalError`` for an UploadPart this plan says must fail.

        :param params: the UploadPart parameters (Bucket, Key, PartNumber...).
        """
        from botocore.exceptions import ClientError

        key = str(params.get("Key", ""))
        if self._should_fail(key):
            with self._lock:
                self.failed.append(key)
            raise ClientError(
                {
                    "Error": {
                        "Code": "InternalError",
                        "Message": "We encountered an internal error (injected)",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "UploadPart",
            )

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Make every ``SeedanceToS3Operator`` client carry the handler.

        :param monkeypatch: a monkeypatch context.
        """
        from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

        original: Callable[[Any], Any] = SeedanceToS3Operator._make_client
        faults = self

        def make_client(operator: Any) -> Any:
            client = original(operator)
            client.meta.events.register("before-parameter-build.s3.UploadPart", faults.handler)
            return client

        monkeypatch.setattr(SeedanceToS3Operator, "_make_client", make_client)


# ---------------------------------------------------------------------------------------------------------
# The token search
# ---------------------------------------------------------------------------------------------------------


def occurrences(texts: list[str], token: str = TEST_TOKEN) -> list[str]:
    """
    Return a short excerpt around every occurrence of ``token`` in ``texts``.

    :param texts: what to search.
    :param token: the secret.
    """
    found: list[str] = []
    for text in texts:
        start = text.find(token)
        while start != -1:
            found.append(text[max(0, start - 80) : start + len(token) + 40])
            start = text.find(token, start + 1)
    return found
