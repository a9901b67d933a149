"""The structured request state in the provider's logs, and the demo that follows a run by it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from airflow_provider_seedance._state_log import (
    QUEUE_POSITION_FIELD,
    REQUEST_ID_FIELD,
    REQUEST_STATES,
    STATE_FIELD,
    LoggedState,
    log_state,
    read_state,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import load_script

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
RID = "4f2c0d9e8b7a41f6a3c2b1d0e9f8a7b6"
INPUT = {"prompt": "A lighthouse at dusk", "first_frame_image_url": "https://example.com/first.png"}


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return load_script(DEMO, "seedance_demo_for_state_log")


class SilentConsole:
    """Stands in for the demo's console: keeps the lines instead of printing them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, label: str, text: str) -> None:
        self.events.append((label, text))


def follower(demo: ModuleType) -> Any:
    return demo.RunFollower(airflow=None, run_id="run", console=SilentConsole())


def as_airflow_writes_it(event_dict: dict[str, Any], logger: str) -> dict[str, Any]:
    """Turn a captured structlog event into the JSON record of an Airflow task or trigger log file."""
    record = {key: value for key, value in event_dict.items() if key != "log_level"}
    record.update(level=event_dict["log_level"], logger=logger)
    return json.loads(json.dumps(record))


class _IntoEventDicts(logging.Handler):
    """Append the provider's stdlib records to a list of structlog event dicts, state fields included."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        if "airflow_provider_seedance" not in record.name:
            return
        event = {"event": record.getMessage(), "log_level": record.levelname.lower()}
        for key in (STATE_FIELD, REQUEST_ID_FIELD, QUEUE_POSITION_FIELD):
            if hasattr(record, key):
                event[key] = getattr(record, key)
        self.events.append(event)


@contextlib.contextmanager
def stdlib_records_into(events: list[Any]) -> Iterator[None]:
    """
    Capture the provider's stdlib log records too, in order with the structlog events.

    Airflow 3.1+ give hooks and triggers structlog loggers; 3.0 gives them stdlib ones, and ``log_state`` then
    passes the state as ``extra``.

    :param events: the list ``capture_logs`` fills.
    """
    handler = _IntoEventDicts(events)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def emitted(state: str, **kwargs: Any) -> dict[str, Any]:
    """Log one state change through the provider's helper on a structlog logger; return the record."""
    with capture_logs() as captured:
        log_state(structlog.get_logger("test"), state, RID, "Seedance request %s: %s", RID, state, **kwargs)
    [event_dict] = captured
    return as_airflow_writes_it(event_dict, "airflow.task.operators.airflow_provider_seedance.operators")


# -- the helper ---------------------------------------------------------------------------------------------


def test_structlog_loggers_get_the_fields_as_keys() -> None:
    record = emitted("queued", queue_position=3)
    assert record["event"] == f"Seedance request {RID}: queued"
    assert (record[STATE_FIELD], record[REQUEST_ID_FIELD], record[QUEUE_POSITION_FIELD]) == ("queued", RID, 3)
    assert read_state(record) == LoggedState("queued", RID, 3)


def test_stdlib_loggers_get_the_fields_as_extra(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.state_log")
    with caplog.at_level(logging.INFO, logger="test.state_log"):
        log_state(logger, "failed", RID, "Seedance request %s failed", RID, level=logging.WARNING)
    [record] = caplog.records
    assert record.getMessage() == f"Seedance request {RID} failed"
    assert record.levelno == logging.WARNING
    assert (getattr(record, STATE_FIELD), getattr(record, REQUEST_ID_FIELD)) == ("failed", RID)
    assert not hasattr(record, QUEUE_POSITION_FIELD)


def test_the_level_is_kept_on_structlog_loggers() -> None:
    with capture_logs() as captured:
        log_state(structlog.get_logger("test"), "succeeded", RID, "no video", level=logging.WARNING)
    assert captured[0]["log_level"] == "warning"


@pytest.mark.parametrize(
    "record",
    [
        {"event": "Seedance request x is generating"},  # prose alone is no state
        {STATE_FIELD: "generating"},
        {STATE_FIELD: "sleeping", REQUEST_ID_FIELD: RID},
        {STATE_FIELD: "queued", REQUEST_ID_FIELD: 42},
    ],
)
def test_records_without_a_valid_state_have_none(record: dict[str, Any]) -> None:
    assert read_state(record) is None


def test_a_queue_position_that_is_not_a_number_is_dropped() -> None:
    record = {STATE_FIELD: "queued", REQUEST_ID_FIELD: RID, QUEUE_POSITION_FIELD: True}
    assert read_state(record) == LoggedState("queued", RID, None)


# -- the demo reads what the provider writes -----------------------------------------------------------------


def test_the_demo_knows_every_state_the_provider_logs(demo: ModuleType) -> None:
    assert set(demo.REQUEST_STATE_LABELS) == set(REQUEST_STATES)


@pytest.mark.parametrize("state", REQUEST_STATES)
def test_the_demo_follows_each_state_from_the_field(demo: ModuleType, state: str) -> None:
    follow = follower(demo)
    follow._show("  (generate_video)", emitted(state))
    assert follow.request_id == RID
    label = demo.REQUEST_STATE_LABELS[state]
    assert follow.request_states == ([] if label is None else [label])


def test_the_demo_ignores_prose_that_looks_like_a_state(demo: ModuleType) -> None:
    follow = follower(demo)
    record = {"event": f"Seedance request {RID} is generating, request_id={RID}", "level": "info"}
    follow._show("  (triggerer)", {**record, "logger": "airflow_provider_seedance.triggers"})
    assert (follow.request_id, follow.request_states) == (None, [])


def test_the_demo_summary_of_a_run(demo: ModuleType) -> None:
    follow = follower(demo)
    for record in (
        emitted("submitted"),
        emitted("queued", queue_position=3),
        emitted("generating"),
        emitted("generating"),
        emitted("succeeded"),
        emitted("succeeded"),
    ):
        follow._show("  (generate_video)", record)
    assert follow.request_states == ["queued (position 3)", "in progress", "succeeded"]


# -- the states the provider really logs during a deferrable run ---------------------------------------------


@pytest.fixture
def fast_conn(emulator: SeedanceEmulator, seedance_conn: str) -> SeedanceEmulator:
    # Each phase outlasts several polls, even when a loaded machine stalls the loop for a while.
    emulator.set_plan(JobPlan(queue_seconds=1.0, run_seconds=1.0))
    return emulator


def test_a_deferrable_run_logs_the_states_the_demo_shows(
    demo: ModuleType, fast_conn: SeedanceEmulator
) -> None:
    """Submit with the hook, wait with the trigger (as the operator and triggerer do), then read it back."""
    with capture_logs() as captured, stdlib_records_into(captured):
        hook = SeedanceHook()
        try:
            request_id = hook.submit(SEEDANCE_1_5_PRO_I2V_MODEL_ID, INPUT).request_id
        finally:
            hook.close()
        trigger = SeedanceRequestTrigger(request_id=request_id, poll_interval=0.05, end_time=time.time() + 30)

        async def first_event() -> Any:
            async for event in trigger.run():
                return event
            return None

        event = asyncio.run(first_event())
    assert event.payload["status"] == "succeeded"
    follow = follower(demo)
    for event_dict in captured:
        follow._show("  (triggerer)", as_airflow_writes_it(event_dict, "airflow_provider_seedance"))
    assert follow.request_id == request_id
    assert follow.request_states[0].startswith("queued")
    assert follow.request_states[-2:] == ["in progress", "succeeded"]
