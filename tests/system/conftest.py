"""Fixtures for the system tests: real Airflow processes (scheduler, triggerer...) against the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_seedance.testing.local_airflow import LocalAirflow


@pytest.fixture(scope="module")
def start_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalAirflow]]:
    """
    Return ``start(dags_folder, **LocalAirflow kwargs)``: a started, healthy Airflow, stopped with the module.

    Every instance gets its own home under pytest's temp dir (kept for post-mortems), and the module fails
    if any of its processes outlives ``stop()``.
    """
    started: list[LocalAirflow] = []

    def start(dags_folder: Path, **kwargs: Any) -> LocalAirflow:
        kwargs.setdefault("home", tmp_path_factory.mktemp("airflow-home"))
        instance = LocalAirflow(dags_folder, **kwargs)
        started.append(instance)
        instance.start()
        instance.wait_ready()
        return instance

    try:
        yield start
    finally:
        leftovers = {}
        for instance in started:
            instance.stop()
            if pids := instance.running_processes():
                leftovers[str(instance.home)] = pids
        assert not leftovers, f"Airflow processes outlived stop(): {leftovers}"
