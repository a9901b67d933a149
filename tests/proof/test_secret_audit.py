"""Secret audit: with a distinctive token, run every path through Airflow, then search everything for it.

Paths (one ``dag.test()``, each path on its own model id so faults and plans stay scoped): deferrable and
sync success, the generic operator, ``wait_for_completion=False``, an API failure, a deadline with cancel,
an auth error at submit and while polling (with a task retry), a submit whose state is unknown, a
transfer that succeeds, one whose S3 upload fails and one whose link expired, the sensor deferred and
poking, and a sensor on a failed request; plus a second run on the Airflow < 3.3 fallback (request id
kept in a Variable). A second audit runs the operator, sensor and transfer paths (and ``test_connection()``)
on a connection whose token has a line break inside, which h11 would quote in its error: every path must fail
before sending anything, and no line of that token may appear anywhere.

Searched afterwards: every column of every row of every metadata DB table (``connection`` excepted: no
test writes one, the connections come from the environment), the raw bytes of every file under
AIRFLOW_HOME (the SQLite DB and its WAL, any log file), the trigger rows a triggerer would store (built with
``Trigger.from_object`` from the triggers the tasks deferred with, kwargs decrypted), every trigger's
``serialize()`` and ``repr()``, every trigger event, everything printed (stdout/stderr at file-descriptor
level) and logged (DEBUG for the provider, the task, httpx and httpcore), every exception of every failed try
(message, repr, attributes, formatted traceback, causes), ``repr()`` of hooks, connection configs,
triggers and operators, and the emulator's request log: the token may appear only as the
``Authorization: Bearer`` header of API calls, and downloads carry no ``Authorization`` header at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import DAG

from airflow_provider_seedance.hooks.seedance import SeedanceConnectionConfig, SeedanceHook
from airflow_provider_seedance.operators import _request_store
from airflow_provider_seedance.operators.seedance import (
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
)
from airflow_provider_seedance.sensors.seedance import SeedanceRequestSensor
from airflow_provider_seedance.testing import Fault, JobPlan
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import TEST_TOKEN
from tests.operators._dag_support import IMAGE, START, run_dag, task_instances, unique_dag_id
from tests.proof._support import (
    BUCKET,
    FAST,
    NEWLINE_TOKEN_CONN_ID,
    NEWLINE_TOKEN_PARTS,
    ErrorLog,
    UploadPartFaults,
    moto_bucket,
    occurrences,
)

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

pytestmark = pytest.mark.usefixtures("airflow_db")

MiB = 1024 * 1024
PREFIX = "proof/audit"
API_ENDPOINTS = frozenset({"submit", "status", "result", "cancel", "model"})


def model(path: str) -> str:
    """Return the model id of one audited path."""
    return f"{PREFIX}/{path}"


# Plan and fault of each path that needs one (scoped to the path's model id).
PATHS: dict[str, tuple[JobPlan, Fault | None]] = {
    "ok": (FAST, None),
    "big": (FAST.model_copy(update={"video_size_bytes": 6 * MiB}), None),
    "expired": (
        FAST,
        Fault(kind="http_error", endpoint="download", status_code=404, error_code=404001, times=None),
    ),
    "failed": (FAST.model_copy(update={"outcome": "fail", "error": "content policy violation"}), None),
    "stuck": (FAST.model_copy(update={"outcome": "stuck_in_queue"}), None),
    "auth-submit": (
        FAST,
        Fault(kind="http_error", endpoint="submit", status_code=401, error_code=400004, times=None),
    ),
    "auth-poll": (
        FAST,
        Fault(kind="http_error", endpoint="status", status_code=401, error_code=400004, times=1, skip=1),
    ),
    "unknown": (FAST, Fault(kind="drop", endpoint="submit", times=None)),
}


@dataclass
class Audit:
    """Everything the audited runs produced, as text, by source."""

    sources: dict[str, list[str]]
    emulator: SeedanceEmulator
    states: dict[str, str]


def _texts(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def metadata_db_rows() -> list[str]:
    """Return every value of every row of every metadata table (``connection`` excepted), as text."""
    from airflow import settings
    from sqlalchemy import inspect, text

    rows: list[str] = []
    engine = settings.engine
    assert engine is not None, "the metadata DB is not configured"
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            if table == "connection":
                continue
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                rows.append(f"{table}: " + " | ".join(_texts(value) for value in row))
    return rows


def files_under(home: Path) -> list[str]:
    """Return the content of every file under AIRFLOW_HOME (DB, WAL, logs), as latin-1 text."""
    return [path.read_bytes().decode("latin-1") for path in home.rglob("*") if path.is_file()]


class Recorder(logging.Handler):
    """Keep every log record, formatted with its exception (root logger, DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Store the formatted record."""
        self.lines.append(self.format(record))


DEBUG_LOGGERS = (
    "airflow_provider_seedance",
    "airflow.task",
    "airflow.sdk",
    "airflow.triggers",
    "httpx",
    "httpcore",
)
"""Loggers recorded at DEBUG: every one that handles the token, a request or a response. (botocore at DEBUG
would log whole 5 MiB upload bodies; the S3 side never holds the API token, so it stays at INFO.)"""


@pytest.fixture
def debug_logging() -> Iterator[Recorder]:
    """Record every log record (DEBUG for the loggers that see API traffic) for the duration of the test."""
    root = logging.getLogger()
    recorder = Recorder()
    levels = {name: logging.getLogger(name).level for name in DEBUG_LOGGERS}
    root_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.INFO)
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _audit_dag(errors: ErrorLog) -> DAG:
    """One DAG with every operator, sensor and transfer path, failures included."""
    fast: dict[str, Any] = {
        "poll_interval": 0.1,
        "on_failure_callback": errors.callback,
        "on_retry_callback": errors.callback,
    }

    def i2v(task_id: str, path: str, **kwargs: Any) -> SeedanceImageToVideoOperator:
        return SeedanceImageToVideoOperator(
            task_id=task_id,
            model_id=model(path),
            prompt=f"Secret audit: {task_id}",
            first_frame_image_url=IMAGE,
            **{**fast, **kwargs},
        )

    def pulled(task_id: str) -> str:
        return f"{{{{ ti.xcom_pull(task_ids='{task_id}', key='request_id') }}}}"

    def store(task_id: str, source: str, **kwargs: Any) -> SeedanceToS3Operator:
        return SeedanceToS3Operator(
            task_id=task_id,
            request_id=pulled(source),
            dest_bucket=BUCKET,
            dest_key=f"audit/{task_id}/clip.mp4",
            aws_conn_id=None,
            part_size=5 * MiB,
            download_max_retries=1,
            download_retry_backoff=0.05,
            on_failure_callback=errors.callback,
            **kwargs,
        )

    def sensor(task_id: str, source: str, **kwargs: Any) -> SeedanceRequestSensor:
        return SeedanceRequestSensor(
            task_id=task_id, request_id=pulled(source), timeout=15, **{**fast, **kwargs}
        )

    with DAG(unique_dag_id("proof_secret_audit"), schedule=None, start_date=START) as dag:
        ok = i2v("ok", "ok")
        ok >> store("store-ok", "ok")
        ok >> sensor("sensor-deferred", "ok", deferrable=True)
        ok >> sensor("sensor-poke", "ok", deferrable=False)
        i2v("sync", "ok", deferrable=False)
        i2v("no-wait", "ok", wait_for_completion=False)
        SeedanceSubmitOperator(
            task_id="generic",
            model_id=model("ok"),
            input={"prompt": "Secret audit: generic", "image": IMAGE, "duration": 5},
            **fast,
        )
        big = i2v("big", "big")
        big >> store("store-upload-fails", "big")
        expired = i2v("expired", "expired")
        expired >> store("store-link-expired", "expired")
        failed = i2v("failed", "failed")
        failed >> sensor("sensor-on-failed", "failed", trigger_rule="all_done")
        i2v("deadline", "stuck", timeout=1)
        i2v("auth-submit", "auth-submit")
        i2v("auth-poll", "auth-poll", retries=1, retry_delay=timedelta(0))
        i2v("state-unknown", "unknown")
    return dag


@pytest.fixture
def audit(
    module_emulator: SeedanceEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    debug_logging: Recorder,
) -> Audit:
    """Run every path (and the < 3.3 fallback), then gather every text Airflow stored or printed."""
    emulator = module_emulator
    for path, (plan, fault) in PATHS.items():
        emulator.state.register_model(model(path))
        emulator.set_model_plan(model(path), plan)
        if fault is not None:
            emulator.add_fault(fault.model_copy(update={"model_id": model(path)}))

    # Record what a triggerer would store and hand back: serialized kwargs, reprs, events.
    triggers: list[SeedanceRequestTrigger] = []
    trigger_texts: list[str] = []
    events: list[str] = []
    serialize, run = SeedanceRequestTrigger.serialize, SeedanceRequestTrigger.run

    def recording_serialize(self: SeedanceRequestTrigger) -> tuple[str, dict[str, Any]]:
        out = serialize(self)
        triggers.append(self)
        trigger_texts.append(json.dumps(out))  # (repr() calls serialize(): recorded after the run)
        return out

    async def recording_run(self: SeedanceRequestTrigger) -> AsyncIterator[Any]:
        async for event in run(self):
            events.append(json.dumps(event.payload))
            yield event

    monkeypatch.setattr(SeedanceRequestTrigger, "serialize", recording_serialize)
    monkeypatch.setattr(SeedanceRequestTrigger, "run", recording_run)
    UploadPartFaults({"audit/store-upload-fails/": None}).install(monkeypatch)

    errors = ErrorLog()
    with moto_bucket():
        dag_run = run_dag(_audit_dag(errors))
    states = {task_id: str(ti.state) for (task_id, _), ti in task_instances(dag_run).items()}

    # Airflow 3.0-3.2 keep the request id in a Variable: one failing generation on that fallback.
    with monkeypatch.context() as patch:
        patch.setattr(_request_store, "task_state_store_from", lambda context: None)
        with DAG(unique_dag_id("proof_secret_audit_variable"), schedule=None, start_date=START) as dag:
            SeedanceImageToVideoOperator(
                task_id="failed-on-variable-store",
                model_id=model("failed"),
                prompt="Secret audit: variable store",
                first_frame_image_url=IMAGE,
                poll_interval=0.1,
                on_failure_callback=errors.callback,
            )
        variable_run = run_dag(dag)
    states.update({f"variable:{t}": str(ti.state) for (t, _), ti in task_instances(variable_run).items()})

    # The rows a real triggerer would hold for these triggers (kwargs encrypted at rest, decrypted here).
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    # repr() and from_object() call serialize() again (which records): work on a snapshot.
    deferred = list({id(trigger): trigger for trigger in triggers}.values())
    with create_session() as session:
        rows = [Trigger.from_object(trigger) for trigger in deferred]
        session.add_all(rows)
        session.flush()
        trigger_texts += [json.dumps(row.kwargs, default=str) for row in rows]

    hook = SeedanceHook()
    hook.get_status(emulator.state.jobs()[0].request_id)  # a used hook: config and client resolved
    reprs = [repr(hook), str(hook), repr(hook.config), str(hook.config), repr(vars(hook))]
    reprs += [repr(SeedanceConnectionConfig(base_url=emulator.base_url, token=TEST_TOKEN))]
    reprs += [repr(trigger) for trigger in deferred]
    trigger_texts += [repr(trigger) for trigger in deferred]
    reprs += [repr(task) for task in _audit_dag(ErrorLog()).tasks]
    hook.close()

    captured = capfd.readouterr()
    home = Path(os.environ["AIRFLOW_HOME"])
    return Audit(
        sources={
            "metadata DB rows": metadata_db_rows(),
            "files under AIRFLOW_HOME (DB, WAL, logs)": files_under(home),
            "trigger kwargs, reprs and stored rows": trigger_texts,
            "trigger events": events,
            "stdout/stderr": [captured.out, captured.err],
            "log records": debug_logging.lines,
            "exceptions": errors.all_texts(),
            "reprs": reprs,
        },
        emulator=emulator,
        states=states,
    )


def test_the_token_is_nowhere_but_the_authorization_header(audit: Audit) -> None:
    """
    Zero occurrences of the token in anything Airflow stored or printed, source by source.

    Three parts: the paths ran as their names say; no source holds the token (and none is empty, nor
    lacks the request ids the runs left, so the search means something); in the emulator's request log
    the token is only ever the bearer token of API calls, and downloads carry no Authorization header.
    """
    assert audit.states == {
        "ok": "success",
        "store-ok": "success",
        "sensor-deferred": "success",
        "sensor-poke": "success",
        "sync": "success",
        "no-wait": "success",
        "generic": "success",
        "big": "success",
        "store-upload-fails": "failed",
        "expired": "success",
        "store-link-expired": "failed",
        "failed": "failed",
        "sensor-on-failed": "failed",
        "deadline": "failed",
        "auth-submit": "failed",
        "auth-poll": "success",
        "state-unknown": "failed",
        "variable:failed-on-variable-store": "failed",
    }

    leaks = {source: occurrences(texts) for source, texts in audit.sources.items()}
    assert leaks == {source: [] for source in audit.sources}

    job_ids = [job.request_id for job in audit.emulator.state.jobs()]
    for source, texts in audit.sources.items():
        blob = "\n".join(texts)
        assert blob, source
        if source != "reprs":
            assert any(request_id in blob for request_id in job_ids), source
    db = "\n".join(audit.sources["metadata DB rows"])
    for table in ("xcom:", "task_state_store:", "variable:", "rendered_task_instance_fields:", "trigger:"):
        assert table in db
    failures = "\n".join(audit.sources["exceptions"])
    for words in (
        "content policy violation",
        "Submission state unknown",
        "UploadPart",
        "HTTP 404",
        "API token",
    ):
        assert words in failures

    requests = audit.emulator.state.requests()
    api_calls = [r for r in requests if r.endpoint in API_ENDPOINTS]
    downloads = [r for r in requests if r.endpoint == "download"]
    assert api_calls
    assert downloads
    for call in api_calls:
        assert call.headers.get("authorization") == f"Bearer {TEST_TOKEN}"
        assert occurrences([json.dumps(call.to_dict(redact=True), default=str)]) == []
    for download in downloads:
        assert "authorization" not in download.headers
        assert occurrences([json.dumps(download.to_dict(redact=False), default=str)]) == []


def test_reprs_hold_no_token(module_emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``repr()``/``str()`` of the hook (used), its config, a trigger, every operator: no token, no header."""
    from tests._support import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(module_emulator))
    hook = SeedanceHook()
    try:
        hook.test_connection()
        trigger = SeedanceRequestTrigger("abc123", poll_interval=1.0, end_time=2e9)
        texts = [
            repr(hook),
            repr(hook.config),
            str(hook.config),
            repr(vars(hook)),
            repr(trigger),
            json.dumps(trigger.serialize()),
            asyncio.run(_async_config_repr(hook)),
        ]
    finally:
        hook.close()
    assert occurrences(texts) == []
    assert "Bearer" not in "".join(texts)


async def _async_config_repr(hook: SeedanceHook) -> str:
    """Return the repr of the config resolved on the async side."""
    return repr(await hook.aget_config())


# ---------------------------------------------------------------------------------------------------------
# The same search with a token that has a line break inside
# ---------------------------------------------------------------------------------------------------------


def _newline_token_dag(errors: ErrorLog) -> DAG:
    """Every path on the newline-token connection (each must fail before sending anything)."""
    common: dict[str, Any] = {
        "seedance_conn_id": NEWLINE_TOKEN_CONN_ID,
        "poll_interval": 0.1,
        "on_failure_callback": errors.callback,
        "on_retry_callback": errors.callback,
    }

    def i2v(task_id: str, **kwargs: Any) -> SeedanceImageToVideoOperator:
        return SeedanceImageToVideoOperator(
            task_id=task_id,
            model_id=model("newline"),
            prompt=f"Secret audit, newline token: {task_id}",
            first_frame_image_url=IMAGE,
            **{**common, **kwargs},
        )

    with DAG(unique_dag_id("proof_secret_audit_newline"), schedule=None, start_date=START) as dag:
        i2v("deferrable", retries=1, retry_delay=timedelta(0))
        i2v("sync", deferrable=False)
        i2v("no-wait", wait_for_completion=False)
        SeedanceSubmitOperator(
            task_id="generic",
            model_id=model("newline"),
            input={"prompt": "Secret audit, newline token: generic", "image": IMAGE},
            **common,
        )
        SeedanceRequestSensor(task_id="sensor", request_id="abc123", timeout=5, **common)
        SeedanceToS3Operator(
            task_id="store",
            request_id="abc123",
            dest_bucket=BUCKET,
            dest_key="audit/newline/clip.mp4",
            seedance_conn_id=NEWLINE_TOKEN_CONN_ID,
            aws_conn_id=None,
            on_failure_callback=errors.callback,
        )
    return dag


def test_a_token_with_a_newline_is_nowhere(
    module_emulator: SeedanceEmulator, capfd: pytest.CaptureFixture[str], debug_logging: Recorder
) -> None:
    """
    A token with a line break inside fails every path before any request, and no line of it is anywhere.

    h11 refuses such a header with an error quoting it (escaped, so Airflow's masker would miss it); the
    provider refuses the token when the connection is read, naming the problem without echoing the value.
    """
    emulator = module_emulator
    emulator.state.register_model(model("newline"))
    before = len(emulator.state.requests())
    errors = ErrorLog()
    with moto_bucket():
        dag_run = run_dag(_newline_token_dag(errors))
    states = {task_id: str(ti.state) for (task_id, _), ti in task_instances(dag_run).items()}
    assert set(states.values()) == {"failed"}, states
    assert emulator.state.requests()[before:] == []

    hook = SeedanceHook(NEWLINE_TOKEN_CONN_ID)
    ok, message = hook.test_connection()
    hook.close()
    assert ok is False
    assert "line break" in message

    failures = errors.all_texts()
    assert failures
    assert all(
        "API token contains a line break" in str(f.error) for items in errors.errors.values() for f in items
    )
    captured = capfd.readouterr()
    sources = {
        "metadata DB rows": metadata_db_rows(),
        "files under AIRFLOW_HOME (DB, WAL, logs)": files_under(Path(os.environ["AIRFLOW_HOME"])),
        "stdout/stderr": [captured.out, captured.err],
        "log records": debug_logging.lines,
        "exceptions": failures,
        "test_connection()": [message],
        "reprs": [
            repr(hook),
            repr(vars(hook)),
            *(repr(task) for task in _newline_token_dag(ErrorLog()).tasks),
        ],
    }
    for part in NEWLINE_TOKEN_PARTS:
        leaks = {source: occurrences(texts, part) for source, texts in sources.items()}
        assert leaks == {source: [] for source in sources}, part
