"""Packaging: provider metadata, entry point, connection form, and cheap, offline imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points

from airflow_provider_seedance import __version__
from airflow_provider_seedance.get_provider_info import get_provider_info

PUBLIC_MODULES = [
    "airflow_provider_seedance",
    "airflow_provider_seedance.exceptions",
    "airflow_provider_seedance.models",
    "airflow_provider_seedance.get_provider_info",
    "airflow_provider_seedance.hooks.seedance",
    "airflow_provider_seedance.lifecycle",
    "airflow_provider_seedance.links.seedance",
    "airflow_provider_seedance.operators.seedance",
    "airflow_provider_seedance.triggers.seedance",
    "airflow_provider_seedance.sensors.seedance",
    "airflow_provider_seedance.transfers.seedance_to_s3",
    "airflow_provider_seedance.testing",
    "airflow_provider_seedance.catalog",
    "airflow_provider_seedance.cost",
    "airflow_provider_seedance.image_checks",
    "airflow_provider_seedance.downloads",
]


def test_provider_info_matches_the_distribution() -> None:
    info = get_provider_info()
    dist = distribution("airflow-provider-seedance")
    assert info["package-name"] == dist.metadata["Name"] == "airflow-provider-seedance"
    assert info["versions"] == [__version__] == [dist.version]
    [conn] = info["connection-types"]
    assert conn["connection-type"] == "seedance"
    assert conn["hook-class-name"] == "airflow_provider_seedance.hooks.seedance.SeedanceHook"
    assert conn["ui-field-behaviour"]["relabeling"] == {"password": "API token", "host": "Base URL"}
    assert conn["ui-field-behaviour"]["placeholders"]["host"] == "https://model-api.runcomfy.net"
    assert set(conn["conn-fields"]) >= {"timeout", "max_retries"}


def test_entry_point_is_registered() -> None:
    [ep] = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_")
    ]
    assert ep.name == "provider_info"
    assert ep.value == "airflow_provider_seedance.get_provider_info:get_provider_info"
    assert ep.load()() == get_provider_info()


def test_every_module_named_in_provider_info_imports() -> None:
    import importlib

    info = get_provider_info()
    modules = [
        m
        for key in ("hooks", "operators", "sensors", "triggers")
        for e in info[key]
        for m in e["python-modules"]
    ]
    modules += [t["python-module"] for t in info["transfers"]]
    for name in modules:
        importlib.import_module(name)
    for link in info["extra-links"]:
        module, _, cls = link.rpartition(".")
        assert hasattr(importlib.import_module(module), cls)


def test_airflow_sees_the_provider_and_connection_type() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    # Airflow 3.0 prints its log lines on stdout before the JSON list.
    listing = next(line for line in out.splitlines() if line.startswith("[{"))
    providers = {p["package_name"]: p for p in json.loads(listing)}
    assert providers["airflow-provider-seedance"]["version"] == __version__

    from airflow.providers_manager import ProvidersManager

    hook_info = ProvidersManager().hooks["seedance"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_seedance.hooks.seedance.SeedanceHook"
    assert hook_info.connection_id_attribute_name == "seedance_conn_id"


IMPORT_PROBE = """
import json, socket, sys, time
def refuse(*args, **kwargs):
    raise AssertionError(f"network call at import time: {args!r}")
socket.socket.connect = refuse
socket.create_connection = refuse
started = time.perf_counter()
import airflow.sdk
base = time.perf_counter()
HEAVY = ("boto3", "botocore", "fastapi", "uvicorn", "moto", "PIL")
# Airflow 3.0's own airflow.sdk already imports fastapi: count only what the provider adds.
baseline = {m for m in HEAVY if m in sys.modules}
for name in sys.argv[1:]:
    __import__(name)
done = time.perf_counter()
heavy = sorted(m for m in HEAVY if m in sys.modules and m not in baseline)
print(json.dumps({"heavy": heavy, "provider_seconds": done - base}))
"""


def test_importing_public_modules_is_offline_and_light() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "RUNCOMFY", "SEEDANCE"))}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *PUBLIC_MODULES],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # boto3 is imported only when a transfer executes; the emulator's web stack only when it starts.
    assert report["heavy"] == []
