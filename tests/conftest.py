"""Shared fixtures: an isolated Airflow home on SQLite, the API emulator on 127.0.0.1, a moto S3."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._support import TEST_TOKEN, conn_json

# Airflow reads its configuration at import time, so the isolated home must exist before any test
# module imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="seedance-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# Never let a developer's real credentials reach a test.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RUNCOMFY_API_TOKEN"):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"


def _moto_before_5_2() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("moto").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (5, 2)


if _moto_before_5_2():
    # The matrix resolves older Airflow releases with the moto of their time, which answers GetObject on a
    # multipart upload with a wrong whole-object CRC32; the tests' own reads would fail on it. (Real S3
    # returns a composite checksum there, which botocore does not validate; the operators check SHA-256.)
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the Airflow metadata database (SQLite) once per test session."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture
def emulator() -> Iterator[SeedanceEmulator]:
    """Start the API emulator on a free 127.0.0.1 port with fast timelines; stop it afterwards."""
    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

    with SeedanceEmulator(token=TEST_TOKEN, plan=JobPlan(queue_seconds=0.2, run_seconds=0.3)) as emu:
        yield emu


@pytest.fixture
def seedance_conn(emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``seedance_default`` at the emulator through ``AIRFLOW_CONN_SEEDANCE_DEFAULT`` (JSON form)."""
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator))
    return "seedance_default"
