"""Fixtures of the proof suite: one emulator and one environment per test module (cheap per-case resets)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests._support import TEST_TOKEN
from tests.proof._support import FAST, set_connections

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator


@pytest.fixture(scope="module")
def module_patch() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch that lives as long as the test module (environment, class attributes)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def module_emulator(module_patch: pytest.MonkeyPatch) -> Iterator[SeedanceEmulator]:
    """
    Serve the emulator on 127.0.0.1 for the whole module, with ``seedance_default``/``seedance_slow`` on it.

    Stopped (and the environment restored) when the module's tests are done.
    """
    from airflow_provider_seedance.testing import SeedanceEmulator

    with SeedanceEmulator(token=TEST_TOKEN, plan=FAST) as emulator:
        set_connections(module_patch, emulator)
        yield emulator
