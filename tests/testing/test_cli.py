"""The ``seedance-emulator`` console script, and the cheap import of the ``testing`` package."""

from __future__ import annotations

import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

import airflow_provider_seedance.testing as testing_package
from airflow_provider_seedance.testing import cli
from airflow_provider_seedance.testing.local_airflow import free_port
from tests.testing._helpers import I2V, I2V_INPUT

CONSOLE_SCRIPT = Path(sys.executable).with_name("seedance-emulator")


def exported_connection(banner: str) -> dict[str, str]:
    line = next(line for line in banner.splitlines() if "AIRFLOW_CONN_SEEDANCE_DEFAULT=" in line)
    return json.loads(shlex.split(line.split("=", 1)[1])[0])


def test_console_script_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    command = [
        str(CONSOLE_SCRIPT),
        "--port",
        str(port),
        "--token",
        "cli-token",
        "--queue-seconds",
        "0",
        "--run-seconds",
        "0",
    ]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        banner = "".join(process.stdout.readline() for _ in range(7))
        assert f"listening on http://127.0.0.1:{port}" in banner
        assert exported_connection(banner) == {
            "conn_type": "seedance",
            "host": f"http://127.0.0.1:{port}",
            "password": "cli-token",
        }
        auth = {"Authorization": "Bearer cli-token"}
        submitted = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{I2V}", json=I2V_INPUT, headers=auth
        ).json()
        result = httpx.get(submitted["result_url"], headers=auth).json()
        assert result["status"] == "succeeded"
        assert httpx.get(result["output"]["video"]).headers["content-type"] == "video/mp4"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Seedance emulator stopped." in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1)


def signal_once_serving(port: int, signum: int, served: list[int]) -> threading.Thread:
    """Send ``signum`` to this process as soon as the emulator on ``port`` answers (never before)."""

    def run() -> None:
        for _ in range(600):
            try:
                served.append(httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1).status_code)
            except httpx.TransportError:
                threading.Event().wait(0.05)
                continue
            os.kill(os.getpid(), signum)
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_main_stops_on_sigint_and_generates_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli.TOKEN_ENV_VAR, raising=False)
    port = free_port()
    served: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    signal_once_serving(port, signal.SIGINT, served)
    assert cli.main(["--port", str(port), "--fail-rate", "0.5", "--seed", "1"]) == 0
    assert signal.getsignal(signal.SIGINT) is previous
    assert served == [200]
    out = capsys.readouterr().out
    token = exported_connection(out)["password"]
    assert len(token) >= 24
    assert f"API token: {token} (generated" in out
    assert "fail rate 50%" in out


def test_token_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV_VAR, "env-token")
    port = free_port()
    served: list[int] = []
    signal_once_serving(port, signal.SIGTERM, served)
    assert cli.main(["--port", str(port)]) == 0
    assert served == [200]
    out = capsys.readouterr().out
    assert exported_connection(out)["password"] == "env-token"
    assert "generated" not in out


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_non_loopback_host_is_refused(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--host", host])
    assert info.value.code == 2
    assert "--allow-remote" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--fail-rate", "2"], ["--queue-seconds", "-1"], ["--video-size-bytes", "5"], ["--log-level", "loud"]],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_busy_port_exits_with_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["--port", str(port), "--token", "t"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_importing_the_package_does_not_load_the_web_stack() -> None:
    code = (
        "import sys, airflow_provider_seedance.testing as t; "
        "heavy = sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'airflow') if m in sys.modules); "
        "print(heavy, sorted(t.__all__))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    expected = ["EmulatorState", "Fault", "JobPlan", "RecordedRequest", "SeedanceEmulator", "create_app"]
    assert completed.stdout.strip() == f"[] {expected}"


@pytest.mark.parametrize("module", ["state", "media", "pytest_plugin", "__init__"])
def test_web_stack_is_imported_only_by_the_server_modules(module: str) -> None:
    source = Path(testing_package.__file__).with_name(f"{module}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"fastapi", "starlette", "uvicorn"})


def test_unknown_attribute() -> None:
    import airflow_provider_seedance.testing as testing

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = testing.Nope  # type: ignore[attr-defined]
    assert "SeedanceEmulator" in dir(testing)
