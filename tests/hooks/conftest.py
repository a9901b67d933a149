"""Fixtures of the hook tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_seedance.hooks.seedance import SeedanceHook


@pytest.fixture
def hook(seedance_conn: str) -> Iterator[SeedanceHook]:
    """A hook on the ``seedance_default`` connection to the emulator, closed after the test."""
    hook = SeedanceHook(seedance_conn)
    yield hook
    hook.close()
