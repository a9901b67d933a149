"""The in-process server: start/stop, ports, threads, connection strings, concurrency, the pytest plugin."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_seedance.testing import EmulatorState, JobPlan, SeedanceEmulator
from tests.testing._helpers import I2V, I2V_INPUT, TOKEN

PYTHON = sys.executable


def emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("seedance-emulator-")]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_two_emulators_at_once_and_stop_frees_everything() -> None:
    threads_before = len(emulator_threads())
    first, second = SeedanceEmulator("tok-a"), SeedanceEmulator("tok-b")
    with first, second:
        assert first.port != second.port
        assert len(emulator_threads()) == threads_before + 2
        assert first.running
        for emulator, token in ((first, "tok-a"), (second, "tok-b")):
            response = httpx.post(
                emulator.url(f"/v1/models/{I2V}"),
                json=I2V_INPUT,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200
        # Each has its own state and token.
        assert (first.state.job_count(), second.state.job_count()) == (1, 1)
        assert (
            httpx.get(first.url(f"/v1/models/{I2V}"), headers={"Authorization": "Bearer tok-b"}).status_code
            == 401
        )
        ports = (first.port, second.port)
    assert len(emulator_threads()) == threads_before
    assert not first.running
    for port in ports:
        assert port_is_free(port)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1)


def test_fixed_port_can_be_reused_after_stop() -> None:
    with SeedanceEmulator() as emulator:
        port = emulator.port
        # Leave a keep-alive connection open: stop() must not wait for it.
        with httpx.Client() as keep_alive:
            assert keep_alive.get(emulator.url("/_emulator/health")).status_code == 200
            emulator.stop()
    with SeedanceEmulator(port=port) as again:
        assert again.base_url == f"http://127.0.0.1:{port}"
        assert httpx.get(again.url("/_emulator/health")).json()["status"] == "ok"


def test_start_twice_and_stop_twice() -> None:
    emulator = SeedanceEmulator()
    with pytest.raises(RuntimeError, match="no port yet"):
        _ = emulator.base_url
    emulator.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            emulator.start()
    finally:
        emulator.stop()
    emulator.stop()
    assert "not started" not in repr(emulator)
    assert "running" not in repr(emulator)


def test_busy_port_fails_clearly() -> None:
    with SeedanceEmulator() as emulator, pytest.raises(OSError):
        SeedanceEmulator(port=emulator.port).start()


def test_stop_does_not_wait_for_a_slow_answer() -> None:
    from airflow_provider_seedance.testing import Fault

    emulator = SeedanceEmulator(TOKEN).start()
    emulator.add_fault(Fault(kind="slow", delay_seconds=30, endpoint="model"))
    results: list[object] = []

    def call() -> None:
        try:
            results.append(
                httpx.get(
                    emulator.url(f"/v1/models/{I2V}"),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=20,
                )
            )
        except httpx.HTTPError as err:
            results.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    while emulator.state.count("model") == 0:
        threading.Event().wait(0.01)
    stopped = threading.Thread(target=emulator.stop)
    stopped.start()
    stopped.join(5)
    caller.join(5)
    assert not stopped.is_alive()
    assert len(results) == 1


def test_given_state_and_plan() -> None:
    state = EmulatorState("first-token")
    with SeedanceEmulator("second-token", state=state, plan=JobPlan(num_videos=2)) as emulator:
        assert emulator.state is state
        assert state.tokens == {"first-token", "second-token"}
        assert state.default_plan.num_videos == 2


def test_connection_strings_work_in_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both forms, read back the way every supported Airflow reads ``AIRFLOW_CONN_*`` variables."""
    from airflow.providers.common.compat.sdk import BaseHook

    with SeedanceEmulator("tok/with:odd@chars") as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_FROM_URI", emulator.connection_uri(timeout=7))
        from_uri = BaseHook.get_connection("seedance_from_uri")
        assert (from_uri.conn_type, from_uri.host, from_uri.password) == (
            "seedance",
            emulator.base_url,
            "tok/with:odd@chars",
        )
        assert int(from_uri.extra_dejson["timeout"]) == 7
        fields = json.loads(emulator.connection_json(timeout=5))
        assert fields == {
            "conn_type": "seedance",
            "host": emulator.base_url,
            "password": "tok/with:odd@chars",
            "extra": {"timeout": 5},
        }
        monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_FROM_JSON", emulator.connection_json(timeout=5))
        from_json = BaseHook.get_connection("seedance_from_json")
        assert (from_json.host, from_json.password, from_json.extra_dejson) == (
            emulator.base_url,
            "tok/with:odd@chars",
            {"timeout": 5},
        )
        assert emulator.environ("my_conn") == {"AIRFLOW_CONN_MY_CONN": emulator.connection_json()}


def test_shortcuts_delegate_to_the_state(shared_emulator: SeedanceEmulator) -> None:
    from airflow_provider_seedance.testing import Fault

    emulator = shared_emulator
    emulator.reset()
    emulator.set_plan(JobPlan(num_videos=4))
    emulator.set_model_plan(I2V, JobPlan(num_videos=5))
    emulator.plan_next(JobPlan(num_videos=6), count=2)
    emulator.add_fault(Fault(kind="drop"))
    state = emulator.state
    assert (
        state.default_plan.num_videos,
        state.model_plans()[I2V].num_videos,
        len(state.pending_plans()),
    ) == (4, 5, 2)
    assert emulator.clear_faults() == 1
    assert emulator.submits() == emulator.requests("submit") == []
    emulator.reset()
    assert state.model_plans() == {}


async def test_thousand_concurrent_connections(shared_emulator: SeedanceEmulator) -> None:
    emulator = shared_emulator
    emulator.reset()
    emulator.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    request_id = emulator.state.submit(I2V, I2V_INPUT, TOKEN).request_id
    request = (
        f"GET /v1/requests/{request_id}/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()
    # Raw sockets, not httpx: the point is the server's capacity, and httpx's pool is slow at this scale.
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", emulator.port) for _ in range(1000))
    )
    try:
        for _, writer in connections:
            writer.write(request)
        heads = await asyncio.wait_for(
            asyncio.gather(*(reader.readuntil(b"\r\n\r\n") for reader, _ in connections)), timeout=60
        )
    finally:
        for _, writer in connections:
            writer.close()
    assert {head.split(b"\r\n", 1)[0] for head in heads} == {b"HTTP/1.1 200 OK"}
    assert emulator.state.count("status") == 1000


# -- the pytest plugin -----------------------------------------------------------------------------------


def test_plugin_fixture_runs_an_emulator(seedance_emulator: SeedanceEmulator) -> None:
    assert seedance_emulator.running
    assert seedance_emulator.token == "test-token"
    response = httpx.get(
        seedance_emulator.url(f"/v1/models/{I2V}"), headers={"Authorization": "Bearer test-token"}
    )
    assert response.status_code == 200


def test_plugin_conn_fixture_sets_the_connection(seedance_emulator_conn: SeedanceEmulator) -> None:
    import os

    assert json.loads(os.environ["AIRFLOW_CONN_SEEDANCE_DEFAULT"])["host"] == seedance_emulator_conn.base_url


USER_CONFTEST = 'pytest_plugins = ["airflow_provider_seedance.testing.pytest_plugin"]\n'
USER_TEST = """
import json, os

import httpx
import pytest

from airflow_provider_seedance.testing import JobPlan


@pytest.fixture
def seedance_emulator_token():
    return "user-token"


@pytest.fixture
def seedance_emulator_plan():
    return JobPlan(queue_seconds=0, run_seconds=0, num_videos=2)


def test_uses_the_emulator(seedance_emulator_conn):
    conn = json.loads(os.environ["AIRFLOW_CONN_SEEDANCE_DEFAULT"])
    auth = {"Authorization": "Bearer " + conn["password"]}
    model = "bytedance/seedance-v1.5-pro/image-to-video"
    body = {"prompt": "p", "first_frame_image_url": "https://x.org/a.png"}
    submitted = httpx.post(conn["host"] + "/v1/models/" + model, json=body, headers=auth).json()
    result = httpx.get(submitted["result_url"], headers=auth).json()
    assert conn["password"] == "user-token"
    assert len(result["output"]["videos"]) == 2
"""


@pytest.fixture(scope="module", autouse=True)
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[str]]:
    """Run a user's test suite that enables the plugin, in the background while this module's tests run."""
    project = tmp_path_factory.mktemp("user-project")
    (project / "conftest.py").write_text(USER_CONFTEST)
    (project / "test_user.py").write_text(USER_TEST)
    (project / "pytest.ini").write_text("[pytest]\n")
    process = subprocess.Popen(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_clean_env(), "AIRFLOW_HOME": str(project / "airflow")},
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_plugin_in_a_users_project(user_project: subprocess.Popen[str]) -> None:
    output, _ = user_project.communicate(timeout=180)
    assert user_project.returncode == 0, output
    assert "1 passed" in output


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PYTEST_"))}
