"""Shared fixtures: an isolated Airflow home on SQLite, the API emulator on 127.0.0.1, a moto S3."""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._support import (
    TEST_TOKEN,
    FakeDataset,
    FakeExternalQueryRunFacet,
    FakeOperatorLineage,
    FakeVersionFacet,
    conn_json,
)

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

# The log capture of the operator tests, for the feature modules that drive operators too (it imports
# Airflow, so it comes after the isolated home).
from tests.operators._dag_support import logs  # noqa: E402, F401

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

# The emulator fixtures users get (seedance_emulator, seedance_emulator_conn), used here as they use them.
pytest_plugins = ["airflow_provider_seedance.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the Airflow metadata database (SQLite) once per test session."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture
def seedance_emulator_token() -> str:
    """The suite's distinctive token (leak checks search for it), instead of the plugin's default."""
    return TEST_TOKEN


@pytest.fixture
def seedance_emulator_plan() -> JobPlan:
    """Fast timelines: a request queues 0.2 s, then generates 0.3 s."""
    from airflow_provider_seedance.testing import JobPlan

    return JobPlan(queue_seconds=0.2, run_seconds=0.3)


@pytest.fixture
def emulator(seedance_emulator: SeedanceEmulator) -> SeedanceEmulator:
    """The plugin's emulator (one per test, stopped afterwards); test packages may share one instead."""
    return seedance_emulator


@pytest.fixture
def seedance_conn(emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``seedance_default`` at the emulator through ``AIRFLOW_CONN_SEEDANCE_DEFAULT`` (JSON form)."""
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator))
    return "seedance_default"


@pytest.fixture
def fake_openlineage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the OpenLineage provider and client classes (neither is installed in the test venv)."""
    import airflow.providers.common.compat.openlineage.facet as facet

    extractors = types.ModuleType("airflow.providers.openlineage.extractors")
    extractors.OperatorLineage = FakeOperatorLineage  # type: ignore[attr-defined]
    package = types.ModuleType("airflow.providers.openlineage")
    package.extractors = extractors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", package)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    monkeypatch.setattr(facet, "Dataset", FakeDataset)
    monkeypatch.setattr(facet, "ExternalQueryRunFacet", FakeExternalQueryRunFacet)
    version = types.ModuleType("openlineage.client.generated.dataset_version_dataset")
    version.DatasetVersionDatasetFacet = FakeVersionFacet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "openlineage.client.generated.dataset_version_dataset", version)
