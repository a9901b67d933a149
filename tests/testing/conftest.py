"""Fixtures of the emulator tests: one emulator per module (reset before each test), clients, a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_seedance.testing import EmulatorState, SeedanceEmulator

# The plugin's own token and plan, as a user gets them (tests/conftest.py sets the suite's for the others).
from airflow_provider_seedance.testing.pytest_plugin import (  # noqa: F401
    seedance_emulator_plan,
    seedance_emulator_token,
)
from tests.testing._helpers import TOKEN, FakeClock


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[SeedanceEmulator]:
    """One emulator per test module: starting and stopping uvicorn costs ~0.3 s, so tests share it."""
    with SeedanceEmulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture
def emu(shared_emulator: SeedanceEmulator) -> SeedanceEmulator:
    """The module's emulator, reset to its initial state for this test."""
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def clock(emu: SeedanceEmulator) -> FakeClock:
    """Drive the emulator's job timelines by hand (the reset before the next test restores the real clock)."""
    fake = FakeClock()
    emu.state.clock = fake
    return fake


@pytest.fixture(scope="module")
def shared_clients(shared_emulator: SeedanceEmulator) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """An authenticated and an anonymous client, kept per module (creating an httpx client costs ~0.1 s)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with (
        httpx.Client(base_url=shared_emulator.base_url, headers=auth, timeout=5) as client,
        httpx.Client(base_url=shared_emulator.base_url, timeout=5) as anonymous,
    ):
        yield client, anonymous


@pytest.fixture
def client(emu: SeedanceEmulator, shared_clients: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """An HTTP client for the emulator, authenticated with its token."""
    return shared_clients[0]


@pytest.fixture
def anonymous(emu: SeedanceEmulator, shared_clients: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """An HTTP client for the emulator without any token (as downloads and control calls are made)."""
    return shared_clients[1]


@pytest.fixture
def state() -> EmulatorState:
    """A state with a fake clock and a fixed seed, for the pure state-machine tests."""
    return EmulatorState(TOKEN, clock=FakeClock(), seed=7)
