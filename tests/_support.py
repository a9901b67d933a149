"""Constants and small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

# The one free-port helper, re-exported for the test modules.
from airflow_provider_seedance.testing.local_airflow import free_port

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

TEST_TOKEN = "sk-test-UNIQUE-7f3a9c2e-seedance-token"
"""A distinctive token: leak checks search for it everywhere."""

__all__ = [
    "TEST_TOKEN",
    "FakeDataset",
    "FakeExternalQueryRunFacet",
    "FakeOperatorLineage",
    "FakeVersionFacet",
    "conn_json",
    "free_port",
    "load_script",
]


def conn_json(emulator: SeedanceEmulator, **extra: object) -> str:
    """Return a JSON ``seedance`` connection for the emulator, with fast retries unless overridden."""
    return emulator.connection_json(**{"timeout": 5, "max_retries": 3, "retry_backoff": 0.05, **extra})


def load_script(path: Path, name: str) -> ModuleType:
    """
    Import a script that is not part of a package (``scripts/demo.py``, a benchmark) as module ``name``.

    :param path: the script.
    :param name: the module name it gets in ``sys.modules``.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the module executes.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- OpenLineage stand-ins (the ``fake_openlineage`` fixture installs them) ----------------------------------


@dataclass
class FakeDataset:
    """Stands in for OpenLineage's ``Dataset`` facet."""

    namespace: str
    name: str
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeVersionFacet:
    """Stands in for OpenLineage's ``DatasetVersionDatasetFacet``."""

    datasetVersion: str


@dataclass
class FakeExternalQueryRunFacet:
    """Stands in for OpenLineage's ``ExternalQueryRunFacet``."""

    externalQueryId: str
    source: str


@dataclass
class FakeOperatorLineage:
    """Stands in for the OpenLineage provider's ``OperatorLineage``."""

    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)
