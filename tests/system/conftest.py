"""Fixtures for the system tests: real Airflow processes (scheduler, triggerer...) against the emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pycache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """
    Return a bytecode cache shared by every Airflow process of the session, when Python writes none.

    With ``PYTHONDONTWRITEBYTECODE`` set, each component would compile Airflow from source at start
    (seconds of CPU per process on 2 cores); one shared cache pays that once per session.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return None
    return tmp_path_factory.mktemp("pycache")
