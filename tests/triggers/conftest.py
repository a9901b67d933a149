"""Fixtures of the trigger tests: a shared emulator server, and the shared HTTP clients closed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from airflow_provider_seedance.hooks.seedance import aclose_shared_clients
from tests.operators._dag_support import emulator, logs, shared_emulator

__all__ = ["emulator", "logs", "shared_emulator"]


@pytest.fixture(autouse=True)
async def _close_shared_clients() -> AsyncIterator[None]:
    yield
    await aclose_shared_clients()
