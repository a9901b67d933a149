"""Helpers for running whole DAGs with ``dag.test()`` and for driving operators directly."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_seedance.hooks.seedance import SeedanceConnectionConfig, SeedanceHook
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    RequestStatus,
    SeedanceImageToVideoInput,
)
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.version_compat import AIRFLOW_V_3_1_PLUS
from tests._compat import store_serialized_dag
from tests._support import TEST_TOKEN

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

MODEL = SEEDANCE_1_5_PRO_I2V_MODEL_ID
IMAGE = "https://example.com/first-frame.png"
START = datetime(2025, 1, 1)


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[SeedanceEmulator]:
    """One emulator server for the whole session: starting uvicorn per test costs a third of a second."""
    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

    with SeedanceEmulator(token=TEST_TOKEN, plan=JobPlan(queue_seconds=0.1, run_seconds=0.1)) as emu:
        yield emu


@pytest.fixture
def emulator(shared_emulator: SeedanceEmulator) -> Iterator[SeedanceEmulator]:
    """The shared emulator, reset (jobs, faults, plans, request log) before and after each test."""
    shared_emulator.reset()
    yield shared_emulator
    shared_emulator.reset()


def unique_dag_id(name: str) -> str:
    """Return a DAG id no other test uses (dag.test() shares one metadata DB per session)."""
    return f"{name}_{uuid.uuid4().hex[:8]}"


def run_dag(dag: Any) -> Any:
    """
    Serialise ``dag`` into the metadata DB (dag.test() needs a serialized DAG) and run it with dag.test().

    Returns the DagRun.
    """
    store_serialized_dag(dag)
    return dag.test()


def task_instances(dag_run: Any) -> dict[tuple[str, int], Any]:
    """Return the run's task instances by (task_id, map_index)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        return {(ti.task_id, ti.map_index): ti for ti in tis}


def xcoms(dag_run: Any) -> list[tuple[str, int, str, Any]]:
    """Return every XCom of the run as (task_id, map_index, key, value)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id)).all()
        return [(r.task_id, r.map_index, r.key, XComModel.deserialize_value(r)) for r in rows]


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """Return one XCom value of the run (``None`` when absent)."""
    for t_id, m_idx, k, value in xcoms(dag_run):
        if (t_id, m_idx, k) == (task_id, map_index, key):
            return value
    return None


class CapturedLogs:
    """Every log line written during a test, whatever stream its handler was bound to."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.structlog_lines: list[str] = []
        self.caplog = caplog

    def text(self) -> str:
        """All captured lines, structlog's and stdlib logging's."""
        return "\n".join([*self.structlog_lines, *(r.getMessage() for r in self.caplog.records)])

    def lines(self, text: str = "") -> list[str]:
        """The captured lines holding ``text`` (stdlib records that structlog also rendered count twice)."""
        return [line for line in self.structlog_lines if text in line]


_WRITER_METHODS = (
    "msg",
    "info",
    "debug",
    "warning",
    "warn",
    "error",
    "err",
    "critical",
    "exception",
    "failure",
    "fatal",
    "log",
)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> CapturedLogs:
    """
    Capture log lines at the source.

    Airflow's structlog writers keep the ``sys.stdout`` of the moment they were first used, which under pytest
    may be an earlier test's capture: reading stdout would silently miss lines. So every line is teed where
    structlog writes it, and stdlib records are taken from caplog.
    """
    import structlog

    captured = CapturedLogs(caplog)
    caplog.set_level(logging.DEBUG)
    # Airflow 3.1+ configure structlog with a WriteLogger; 3.0's dag.test() leaves structlog's default, the
    # PrintLogger; JSON logging writes bytes.
    for writer in (structlog.WriteLogger, structlog.PrintLogger, structlog.BytesLogger):
        for name in _WRITER_METHODS:
            original = getattr(writer, name, None)
            if original is None:
                continue

            def tee(self: Any, message: str | bytes, _original: Callable[..., None] = original) -> None:
                text = message.decode(errors="replace") if isinstance(message, bytes) else message
                captured.structlog_lines.append(text)
                _original(self, message)

            monkeypatch.setattr(writer, name, tee)
    if not AIRFLOW_V_3_1_PLUS:
        # Airflow 3.0 leaves stdlib records to stdlib's handlers (3.1+ render them through structlog too):
        # take the provider's own records from there.
        root = logging.getLogger()
        monkeypatch.setattr(root, "handlers", [*root.handlers, _ProviderRecords(captured.structlog_lines)])
    return captured


class _ProviderRecords(logging.Handler):
    """Append the level and message of every record of the provider's loggers to a list."""

    def __init__(self, lines: list[str]) -> None:
        # INFO and up, as Airflow 3.1+ render the provider's lines by default.
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if "airflow_provider_seedance" in record.name:
            # With its level first, as structlog's console renderer writes it on 3.1+.
            self.lines.append(f"[{record.levelname.lower():9}] {record.getMessage()}")


def in_background(action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in a daemon thread (e.g. to cancel a request while dag.test() waits for it)."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def offline_hook(emulator: SeedanceEmulator) -> SeedanceHook:
    """
    Return a hook on the emulator that never asks Airflow for its connection.

    For a background thread while dag.test() runs a task in the same process: on Airflow 3.0 a connection
    lookup there goes through the one supervisor channel the task is using, and can cut the task's own
    messages (its Variable and XCom writes) short.

    :param emulator: the emulator to call.
    """
    hook = SeedanceHook()
    hook.__dict__["config"] = SeedanceConnectionConfig(base_url=emulator.base_url, token=emulator.token)
    return hook


def wait_for(predicate: Callable[[], bool], limit: float = 15.0) -> None:
    """Wait until ``predicate()`` is true, failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------------------
# Driving execute() directly: a task instance and a task_state_store that behave like Airflow's
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FakeTaskInstance:
    """The parts of a RuntimeTaskInstance the operators use."""

    dag_id: str = "direct_dag"
    task_id: str = "generate"
    run_id: str = "manual__direct"
    map_index: int = -1
    try_number: int = 1
    xcom_values: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom_values[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom_values.get(key)


@dataclass
class FakeTaskStateStore:
    """A dict-backed ``task_state_store`` (same get/set/delete signature as Airflow 3.3's accessor)."""

    values: dict[str, Any] = field(default_factory=dict)
    retentions: dict[str, timedelta | None] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    fail_get: bool = False
    fail_set: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        if self.fail_get:
            raise RuntimeError("task state store unavailable")
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        if self.fail_set:
            raise RuntimeError("task state store unavailable")
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = value
        self.retentions[key] = retention

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.values.pop(key, None)


def make_context(
    ti: FakeTaskInstance | None = None, store: FakeTaskStateStore | None = None
) -> dict[str, Any]:
    """Build a task context for calling execute()/execute_complete() directly."""
    ti = ti or FakeTaskInstance()
    context: dict[str, Any] = {"ti": ti, "task_instance": ti}
    if store is not None:
        context["task_state_store"] = store
    return context


# ---------------------------------------------------------------------------------------------------------
# Requests made outside the task under test, and the operator most tests drive
# ---------------------------------------------------------------------------------------------------------


def request_body(prompt: str, image: str = IMAGE) -> dict[str, Any]:
    """
    Return the validated image-to-video request body the operator sends for ``prompt`` and ``image``.

    :param prompt: the prompt.
    :param image: the first-frame image URL.
    """
    fields = {"prompt": prompt, "first_frame_image_url": image}
    return SeedanceImageToVideoInput.validate_input(fields).to_request_body()


def submit_request(
    emulator: SeedanceEmulator, body: Mapping[str, Any], plan: JobPlan | None = None, model: str = MODEL
) -> str:
    """
    Submit a request straight through the hook, as another DAG or a notebook would; return its id.

    :param emulator: the emulator, given ``plan`` for the new job when one is passed.
    :param body: the request body.
    :param plan: the job plan of the request (``None``: the emulator's current plan).
    :param model: the model id.
    """
    if plan is not None:
        emulator.set_plan(plan)
    hook = SeedanceHook()
    try:
        return hook.submit(model, body).request_id
    finally:
        hook.close()


def request_state(request_id: str) -> RequestStatus:
    """Return the state the API reports for a request now."""
    hook = SeedanceHook()
    try:
        return hook.get_status(request_id).state
    finally:
        hook.close()


def image_to_video(prompt: str, image: str = IMAGE, /, **kwargs: Any) -> SeedanceImageToVideoOperator:
    """
    Return the image-to-video operator, task id ``generate``, polling every 0.05 s unless told otherwise.

    :param prompt: the default prompt (``prompt=`` in ``kwargs`` overrides it).
    :param image: the default first-frame image URL (``first_frame_image_url=`` overrides it).
    :param kwargs: further operator arguments.
    """
    kwargs = {"task_id": "generate", "prompt": prompt, "first_frame_image_url": image, **kwargs}
    kwargs.setdefault("poll_interval", 0.05)
    return SeedanceImageToVideoOperator(**kwargs)


def spy_variable_saves(monkeypatch: pytest.MonkeyPatch, *, keep_task_state_store: bool = False) -> list[str]:
    """
    Return the list of Variable keys the request store writes (Airflow 3.0-3.2's store).

    :param monkeypatch: the test's monkeypatch.
    :param keep_task_state_store: leave the release as it is (for the releases that lack the store); by
        default ``task_state_store`` is taken away, so any release falls back to Variables.
    """
    from airflow_provider_seedance.operators import _request_store

    if not keep_task_state_store:
        monkeypatch.setattr(_request_store, "task_state_store_from", lambda context: None)
    keys: list[str] = []
    original_save = _request_store.VariableRequestStore.save

    def save(self: _request_store.VariableRequestStore, record: _request_store.StoredRequest) -> None:
        keys.append(self.key)
        original_save(self, record)

    monkeypatch.setattr(_request_store.VariableRequestStore, "save", save)
    return keys


def assert_retry_reattaches_through_a_variable(emulator: SeedanceEmulator, dag: Any, keys: list[str]) -> None:
    """
    Fail the first try of ``dag``'s ``generate`` task after its submit; assert the retry re-attached.

    The request id must have gone through one Variable (seen in ``keys``), deleted once the task succeeded.

    :param emulator: the emulator the DAG's connection points at.
    :param dag: a DAG whose ``generate`` task has one retry and no retry delay.
    :param keys: the list :func:`spy_variable_saves` returned.
    """
    from airflow.models.variable import Variable

    from airflow_provider_seedance.operators import _request_store
    from airflow_provider_seedance.testing import Fault, JobPlan

    emulator.set_plan(JobPlan(queue_seconds=0.5, run_seconds=0.3))
    # A permanent-looking error on the first status read fails try 1 after the paid submit.
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=401, times=1))
    dag_run = run_dag(dag)

    ti = task_instances(dag_run)[("generate", -1)]
    assert (str(ti.state), ti.try_number) == ("success", 2)
    assert emulator.state.count("submit") == 1, "the retry submitted again"
    assert keys == [_request_store.variable_key(dag.dag_id, "generate", dag_run.run_id, -1)], keys
    assert Variable.get(keys[0], default_var=None) is None, "the Variable outlived the task's success"
