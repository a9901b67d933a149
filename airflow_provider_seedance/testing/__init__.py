"""A local stand-in for the RunComfy Model API, for testing DAGs and the provider without the real service.

Importing this package is cheap: the web stack (FastAPI, uvicorn) is imported only when
:class:`SeedanceEmulator` or :func:`create_app` is first used. See ``docs/emulator.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_seedance.testing.app import create_app
    from airflow_provider_seedance.testing.server import SeedanceEmulator
    from airflow_provider_seedance.testing.state import EmulatorState, Fault, JobPlan, RecordedRequest

_EXPORTS = {
    "SeedanceEmulator": "server",
    "EmulatorState": "state",
    "JobPlan": "state",
    "Fault": "state",
    "RecordedRequest": "state",
    "create_app": "app",
}

__all__ = ["EmulatorState", "Fault", "JobPlan", "RecordedRequest", "SeedanceEmulator", "create_app"]


def __getattr__(name: str) -> Any:
    """
    Import a public name from its module on first use (keeps the web stack out of plain imports).

    :param name: the attribute asked for.
    """
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
