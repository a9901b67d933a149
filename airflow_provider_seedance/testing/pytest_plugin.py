"""Pytest fixtures that run the Seedance API emulator for your DAG tests.

Enable them in your ``conftest.py``::

    pytest_plugins = ["airflow_provider_seedance.testing.pytest_plugin"]

Then use ``seedance_emulator`` (a running :class:`~airflow_provider_seedance.testing.SeedanceEmulator`) or
``seedance_emulator_conn`` (the same, with ``AIRFLOW_CONN_SEEDANCE_DEFAULT`` pointing at it). Override
``seedance_emulator_token`` or ``seedance_emulator_plan`` in your own ``conftest.py`` to change the token or
the default job plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_seedance.testing.server import SeedanceEmulator
    from airflow_provider_seedance.testing.state import JobPlan

DEFAULT_FIXTURE_TOKEN = "test-token"
"""The token the ``seedance_emulator`` fixture accepts unless ``seedance_emulator_token`` is overridden."""


@pytest.fixture
def seedance_emulator_token() -> str:
    """Return the token the emulator accepts (override this fixture to choose another)."""
    return DEFAULT_FIXTURE_TOKEN


@pytest.fixture
def seedance_emulator_plan() -> JobPlan | None:
    """Return the emulator's default job plan; ``None`` means the fast defaults (override to change)."""
    return None


@pytest.fixture
def seedance_emulator(
    seedance_emulator_token: str, seedance_emulator_plan: JobPlan | None
) -> Iterator[SeedanceEmulator]:
    """
    Run the emulator on a free 127.0.0.1 port for one test, and stop it afterwards.

    :param seedance_emulator_token: the accepted token.
    :param seedance_emulator_plan: the default job plan.
    """
    from airflow_provider_seedance.testing.server import SeedanceEmulator

    with SeedanceEmulator(seedance_emulator_token, plan=seedance_emulator_plan) as emulator:
        yield emulator


@pytest.fixture
def seedance_emulator_conn(
    seedance_emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> SeedanceEmulator:
    """
    Run the emulator and point the ``seedance_default`` connection at it (``AIRFLOW_CONN_SEEDANCE_DEFAULT``).

    :param seedance_emulator: the running emulator.
    :param monkeypatch: restores the environment after the test.
    """
    from airflow_provider_seedance.testing.server import CONNECTION_ENV_VAR

    monkeypatch.setenv(CONNECTION_ENV_VAR, seedance_emulator.connection_json())
    return seedance_emulator
