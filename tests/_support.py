"""Constants and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

# The one free-port helper, re-exported for the test modules.
from airflow_provider_seedance.testing.local_airflow import free_port

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

TEST_TOKEN = "sk-test-UNIQUE-7f3a9c2e-seedance-token"
"""A distinctive token: leak checks search for it everywhere."""

__all__ = ["TEST_TOKEN", "conn_json", "free_port"]


def conn_json(emulator: SeedanceEmulator, **extra: object) -> str:
    """Return a JSON ``seedance`` connection for the emulator, with fast retries unless overridden."""
    return emulator.connection_json(**{"timeout": 5, "max_retries": 3, "retry_backoff": 0.05, **extra})
