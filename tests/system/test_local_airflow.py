"""LocalAirflow's own guarantees, checked without starting Airflow: isolation and no process left behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from airflow_provider_seedance.testing.local_airflow import (
    MARKER_ENV,
    LocalAirflow,
    free_port,
    read_log_records,
)

# A component that behaves like the scheduler: ignores SIGTERM, and starts a child in a session of its
# own (as Airflow's task supervisor does), which a killpg of the component's group cannot reach.
STUBBORN_COMPONENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(
        [sys.executable, "-c", STUBBORN],
        start_new_session=True,
    )
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_environment_is_isolated_from_the_callers_airflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "True")
    monkeypatch.setenv("AIRFLOW_CONN_LEAKY", "http://user:pw@host")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere/else")
    monkeypatch.setenv("AWS_PROFILE", "production")
    airflow = LocalAirflow(
        tmp_path,
        env={"AIRFLOW_CONN_SEEDANCE_DEFAULT": "{}", "AWS_PROFILE": None},
        config={"core.parallelism": "99", "scheduler.scheduler_heartbeat_sec": "2"},
        home=tmp_path / "home",
    )

    env = airflow.environment()

    assert "AIRFLOW_CONN_LEAKY" not in env
    assert "AWS_PROFILE" not in env
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path.resolve())
    assert env["AIRFLOW_CONN_SEEDANCE_DEFAULT"] == "{}"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC"] == "2"
    # parallelism= wins over config= for the executor's slots.
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert env[MARKER_ENV] == airflow.instance_id
    # The secrets every component must share are the same on every call.
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == airflow.environment()["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_bad_arguments_fail_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        LocalAirflow(tmp_path / "missing")
    with pytest.raises(ValueError, match="triggerers"):
        LocalAirflow(tmp_path, triggerers=-1)
    with pytest.raises(ValueError, match=r"section\.option"):
        LocalAirflow(tmp_path, config={"nosection": "1"}).environment()


def test_importing_the_module_imports_neither_airflow_nor_httpx() -> None:
    code = (
        "import importlib.util, sys;"
        "spec = importlib.util.spec_from_file_location("
        "'la', 'airflow_provider_seedance/testing/local_airflow.py');"
        "module = sys.modules['la'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
        "print(sorted(m for m in ('airflow', 'httpx', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stop_leaves_no_process_even_when_components_resist(tmp_path: Path) -> None:
    airflow = LocalAirflow(tmp_path, home=tmp_path / "home")
    airflow._prepare_home()
    airflow._spawn("stubborn", [sys.executable, "-c", STUBBORN_COMPONENT])
    log = airflow.process_log("stubborn")
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(log.read_text().split()[0])
    assert psutil.pid_exists(grandchild)
    assert len(airflow.running_processes()) == 2

    started = time.monotonic()
    airflow.stop(grace=1.0)

    assert time.monotonic() - started < 20
    assert airflow.running_processes() == []
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    airflow.stop()  # idempotent


def test_read_log_records_decodes_json_lines_and_keeps_plain_lines(tmp_path: Path) -> None:
    path = tmp_path / "attempt=1.log"
    path.write_text('{"event": "Pausing task as DEFERRED. ", "level": "info"}\nplain text\n\n[1, 2]\n')

    records = list(read_log_records(path))

    assert records == [
        {"event": "Pausing task as DEFERRED. ", "level": "info"},
        {"event": "plain text"},
        {"event": "[1, 2]"},
    ]
    assert list(read_log_records(tmp_path / "missing.log")) == []


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
