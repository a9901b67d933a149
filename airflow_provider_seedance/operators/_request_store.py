"""Where a generation operator keeps the id of the request it paid for, so a new try never pays twice.

The API has no idempotency key: a second POST starts (and bills) a second video. So right after a
successful submit the operator records ``{"request_id", "model_id", "input_sha256"}`` here, and every new
try (a retry after a failure, a rerun after a worker crash) reads it back before submitting anything.

* Airflow 3.3+: ``context["task_state_store"]``, scoped to (dag_id, run_id, task_id, map_index) by Airflow
  itself, so it survives retries and worker crashes. Written with an explicit retention that outlives every
  try of the task.
* Airflow 3.0-3.2 (no ``task_state_store`` in the context): an Airflow Variable named after the same
  (dag_id, task_id, run_id, map_index), written and read through the Task SDK like any Variable. The name
  ends with a SHA-256 of the four, so no two task instances share one (dots in DAG and task ids, and run
  ids repeated across DAGs, made the plain dotted names of 0.1 collide).

Either record is deleted when the task succeeds: it exists to finish an unfinished generation, so clearing
a successful task generates a new video, while a retry of an unfinished one re-attaches to the request.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

from airflow_provider_seedance.models import MODEL_ID_PATTERN, REQUEST_ID_PATTERN, unsigned_input

STATE_KEY = "seedance_request"
"""The ``task_state_store`` key. Renaming it breaks re-attaching for tries already in flight."""

VARIABLE_PREFIX = "seedance_request"
"""Prefix of the Variable used as the store on Airflow < 3.3."""

VARIABLE_KEY_MAX_LENGTH = 250
"""Airflow's limit on Variable keys."""

VARIABLE_KEY_ID_CHARS = 80
"""How much of the DAG id and of the task id the Variable key shows (for people; the hash identifies)."""

MIN_RETENTION = timedelta(days=7)
"""The shortest time a stored request id is kept: long enough for a retry after a weekend-long outage."""


def input_fingerprint(model_id: str, body: Mapping[str, Any]) -> str:
    """
    Return the SHA-256 of a submission: the model id and the JSON body, canonically encoded.

    URLs count without their signing query parameters
    (:func:`~airflow_provider_seedance.models.unsigned_url`): a presigned image URL rendered again for a
    retry names the same input, not a new one.

    :param model_id: the model the body is for.
    :param body: the JSON body sent to the API.
    """
    canonical = json.dumps(
        {"model_id": model_id, "input": unsigned_input(body)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredRequest:
    """
    A request submitted by an earlier try of the same task instance.

    :param request_id: the RunComfy request id.
    :param model_id: the model it was submitted to.
    :param input_sha256: :func:`input_fingerprint` of the submission.
    :param submitted_at: when it was submitted, epoch seconds (``None`` in records written before it was
        kept): a retry reads a 404 shortly after it as read-after-write lag, not as a request that is gone.
    """

    request_id: str
    model_id: str
    input_sha256: str
    submitted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON value written to the store."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: object) -> StoredRequest | None:
        """
        Read a stored value back; anything that is not a well-formed record counts as "nothing stored".

        :param value: what the store returned.
        """
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, Mapping):
            return None
        request_id, model_id, digest, submitted_at = (
            value.get("request_id"),
            value.get("model_id"),
            value.get("input_sha256"),
            value.get("submitted_at"),
        )
        if not (
            isinstance(request_id, str)
            and REQUEST_ID_PATTERN.match(request_id)
            and isinstance(model_id, str)
            and MODEL_ID_PATTERN.match(model_id)
            and isinstance(digest, str)
        ):
            return None
        if (
            isinstance(submitted_at, bool)
            or not isinstance(submitted_at, (int, float))
            or not math.isfinite(submitted_at)
        ):
            # Absent (an older record) or unreadable: no grace, as before the time was kept.
            submitted_at = None
        return cls(
            request_id=request_id,
            model_id=model_id,
            input_sha256=digest,
            submitted_at=None if submitted_at is None else float(submitted_at),
        )

    def matches(self, model_id: str, input_sha256: str) -> bool:
        """
        Say whether this record is for the same submission (same model, same input).

        :param model_id: the model about to be submitted to.
        :param input_sha256: the fingerprint of the submission about to be made.
        """
        return self.model_id == model_id and self.input_sha256 == input_sha256


class RequestStore(Protocol):
    """Where the id of a paid-for request is kept between tries of one task instance."""

    description: str

    def load(self) -> StoredRequest | None:
        """Return the record of an earlier try, if any."""

    def save(self, record: StoredRequest) -> None:
        """
        Record a request just submitted.

        :param record: the request.
        """

    def discard(self) -> None:
        """Forget the record (the task succeeded)."""


class _TaskStateStore(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None: ...

    def delete(self, key: str) -> None: ...


class TaskStateRequestStore:
    """
    Keep the record in Airflow 3.3's ``task_state_store`` (survives retries and worker crashes).

    :param accessor: ``context["task_state_store"]``.
    :param retention: how long Airflow keeps the record; must outlive every try of the task.
    """

    description = "task_state_store"

    def __init__(self, accessor: _TaskStateStore, retention: timedelta) -> None:
        self.accessor = accessor
        self.retention = retention

    def load(self) -> StoredRequest | None:
        """Return the record of an earlier try, if any."""
        return StoredRequest.from_json(self.accessor.get(STATE_KEY))

    def save(self, record: StoredRequest) -> None:
        """
        Record a request just submitted.

        :param record: the request.
        """
        self.accessor.set(STATE_KEY, record.to_json(), retention=self.retention)

    def discard(self) -> None:
        """Forget the record (the task succeeded)."""
        self.accessor.delete(STATE_KEY)


def variable_key(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str:
    """
    Return the Variable key of one task instance's record: ``seedance_request.<dag>.<task>.<sha256>``.

    The SHA-256 covers the four identifiers, JSON-encoded (so ``etl.x``/``gen`` and ``etl``/``x.gen``
    differ), which makes the key unique; the DAG and task ids in front, cut to
    :data:`VARIABLE_KEY_ID_CHARS`, are only there to tell people whose record it is.

    :param dag_id: the DAG id.
    :param task_id: the task id.
    :param run_id: the DAG run id.
    :param map_index: the map index (``-1`` for unmapped tasks).
    """
    index = -1 if map_index is None else map_index
    identity = json.dumps([dag_id, task_id, run_id, index], ensure_ascii=False)
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()
    return f"{VARIABLE_PREFIX}.{dag_id[:VARIABLE_KEY_ID_CHARS]}.{task_id[:VARIABLE_KEY_ID_CHARS]}.{digest}"


def legacy_variable_key(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str | None:
    """
    Return the key version 0.1 wrote the record under, when that key can only be this task instance's.

    ``seedance_request.{dag}.{task}.{run}.{map}`` is ambiguous once the DAG or task id holds a dot (task
    groups put one in every task id), so such an instance does not read it: a try that failed before the
    upgrade re-attaches only when its ids are dot-free. Anything read is still checked against the model
    and input fingerprint before use.

    :param dag_id: the DAG id.
    :param task_id: the task id.
    :param run_id: the DAG run id.
    :param map_index: the map index (``-1`` for unmapped tasks).
    """
    if "." in dag_id or "." in task_id:
        return None
    index = -1 if map_index is None else map_index
    key = f"{VARIABLE_PREFIX}.{dag_id}.{task_id}.{run_id}.{index}"
    if len(key) <= VARIABLE_KEY_MAX_LENGTH:
        return key
    digest = hashlib.sha256(f"{dag_id}\0{task_id}\0{run_id}\0{index}".encode()).hexdigest()
    return f"{VARIABLE_PREFIX}.{dag_id[:100]}.{task_id[:80]}.{digest[:40]}"


class VariableRequestStore:
    """
    Keep the record in an Airflow Variable (Airflow 3.0-3.2, where ``task_state_store`` does not exist).

    :param key: the Variable key, from :func:`variable_key`.
    :param legacy_key: where version 0.1 kept the record, from :func:`legacy_variable_key`: read when
        ``key`` holds nothing, and deleted with it.
    """

    description = "Airflow Variable"

    def __init__(self, key: str, legacy_key: str | None = None) -> None:
        self.key = key
        self.legacy_key = legacy_key

    def load(self) -> StoredRequest | None:
        """Return the record of an earlier try, if any."""
        from airflow.providers.common.compat.sdk import Variable

        for key in (self.key, self.legacy_key):
            if key is not None:
                record = StoredRequest.from_json(Variable.get(key, default=None, deserialize_json=True))
                if record is not None:
                    return record
        return None

    def save(self, record: StoredRequest) -> None:
        """
        Record a request just submitted.

        :param record: the request.
        """
        from airflow.providers.common.compat.sdk import Variable

        Variable.set(
            self.key,
            record.to_json(),
            description="Seedance request submitted by this task instance (re-attached on retry; "
            "deleted when the task succeeds).",
            serialize_json=True,
        )

    def discard(self) -> None:
        """Forget the record (the task succeeded)."""
        from airflow.providers.common.compat.sdk import Variable

        for key in (self.key, self.legacy_key):
            if key is not None:
                Variable.delete(key)


def task_state_store_from(context: Mapping[str, Any]) -> _TaskStateStore | None:
    """
    Return Airflow 3.3's ``task_state_store`` from a task context, or ``None`` on earlier versions.

    :param context: the task context.
    """
    return context.get("task_state_store")


def request_store_for(context: Mapping[str, Any], *, retention: timedelta) -> RequestStore | None:
    """
    Return the store for this task instance: ``task_state_store`` (3.3+) or a Variable; ``None`` without a TI.

    :param context: the task context.
    :param retention: how long a ``task_state_store`` record is kept.
    """
    accessor = task_state_store_from(context)
    if accessor is not None:
        return TaskStateRequestStore(accessor, retention)
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return None
    identity = (ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
    return VariableRequestStore(variable_key(*identity), legacy_key=legacy_variable_key(*identity))


__all__ = [
    "MIN_RETENTION",
    "STATE_KEY",
    "RequestStore",
    "StoredRequest",
    "TaskStateRequestStore",
    "VariableRequestStore",
    "input_fingerprint",
    "legacy_variable_key",
    "request_store_for",
    "variable_key",
]
