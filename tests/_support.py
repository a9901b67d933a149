"""Constants and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

TEST_TOKEN = "sk-test-UNIQUE-7f3a9c2e-seedance-token"
"""A distinctive token: leak checks search for it everywhere."""


def conn_json(emulator: SeedanceEmulator, **extra: object) -> str:
    """Return a JSON ``seedance`` connection for the emulator, with fast retries unless overridden."""
    fields = {"timeout": 5, "max_retries": 3, "retry_backoff": 0.05, **extra}
    return json.dumps(
        {"conn_type": "seedance", "host": emulator.base_url, "password": emulator.token, "extra": fields}
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
