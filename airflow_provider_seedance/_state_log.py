"""The structured state the provider logs when a request changes state, for tools that follow a run.

The log messages are prose for people and may be reworded; tools read the fields instead. Every state
change of a request (submitted, queued, generating, and how it ended) is logged through :func:`log_state`,
which adds three fields to the log record: ``seedance_state`` (one of :data:`REQUEST_STATES`),
``request_id`` and, while queued, ``queue_position``. In Airflow's JSON task and trigger logs they are keys
of the record, next to ``event`` (the message)::

    {"event": "Seedance request 4f2c... is queued at position 3", "seedance_state": "queued",
     "request_id": "4f2c...", "queue_position": 3, "level": "info", ...}

``scripts/demo.py`` follows its run this way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, get_args

STATE_FIELD = "seedance_state"
"""The log record key holding the request's state."""

REQUEST_ID_FIELD = "request_id"
"""The log record key holding the request id."""

QUEUE_POSITION_FIELD = "queue_position"
"""The log record key holding the queue position (queued requests, when the API reports one)."""

RequestState = Literal[
    "submitted", "queued", "generating", "succeeded", "failed", "cancelled", "timeout", "error"
]
"""A request's logged state; the last five are the outcomes of a wait (the trigger event's ``status``)."""

REQUEST_STATES: tuple[RequestState, ...] = get_args(RequestState)
"""Every value :data:`STATE_FIELD` can take."""


class LoggedState(NamedTuple):
    """
    The state fields of one log record.

    :param state: the request's state.
    :param request_id: the request.
    :param queue_position: its queue position, when queued and reported.
    """

    state: RequestState
    request_id: str
    queue_position: int | None = None


def log_state(
    log: Any,
    state: RequestState,
    request_id: str,
    message: str,
    *args: object,
    level: int = logging.INFO,
    queue_position: int | None = None,
) -> None:
    """
    Log ``message % args`` with the request's state as structured fields.

    :param log: the logger: Airflow's structlog loggers (tasks, triggers, hooks) take the fields as keyword
        arguments; a stdlib ``logging`` logger gets them as ``extra``.
    :param state: the state the request is now in.
    :param request_id: the request.
    :param message: the message for people (``%``-style, as for ``logging``).
    :param args: the message's arguments.
    :param level: the ``logging`` level.
    :param queue_position: the queue position, for ``queued``.
    """
    fields: dict[str, Any] = {STATE_FIELD: state, REQUEST_ID_FIELD: request_id}
    if queue_position is not None:
        fields[QUEUE_POSITION_FIELD] = queue_position
    if isinstance(log, (logging.Logger, logging.LoggerAdapter)):
        log.log(level, message, *args, extra=fields)
    else:
        getattr(log, logging.getLevelName(level).lower())(message, *args, **fields)


def read_state(record: Mapping[str, Any]) -> LoggedState | None:
    """
    Return the state fields of a log record (a JSON log line, parsed), or ``None`` when it has none.

    :param record: the log record.
    """
    state = record.get(STATE_FIELD)
    request_id = record.get(REQUEST_ID_FIELD)
    if state not in REQUEST_STATES or not isinstance(request_id, str):
        return None
    position = record.get(QUEUE_POSITION_FIELD)
    if isinstance(position, bool) or not isinstance(position, int):
        position = None
    return LoggedState(state, request_id, position)


__all__ = [
    "QUEUE_POSITION_FIELD",
    "REQUEST_ID_FIELD",
    "REQUEST_STATES",
    "STATE_FIELD",
    "LoggedState",
    "RequestState",
    "log_state",
    "read_state",
]
