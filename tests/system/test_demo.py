"""The demo (``python3 dev.py demo``) end to end, as users run it first: default mode, real mode, Ctrl-C.

Each test runs ``scripts/demo.py`` as a subprocess with the project's interpreter. "Real mode" is pointed at
stand-ins: the API emulator as the RunComfy host (``--base-url``) and a moto server as S3
(``AWS_ENDPOINT_URL_S3``, honoured by boto3), so nothing paid is ever called.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.local_airflow import default_pycache_dir
from tests._support import TEST_TOKEN, load_script

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
DEMO_TIMEOUT = 420.0
REAL_BUCKET = "stand-in-bucket"
EXIT_BILLING_NOT_CONFIRMED = 3
EXIT_INTERRUPTED = 130


def _demo_env(**extra: str) -> dict[str, str]:
    """Return the demo's environment: this one, minus anything that could reach real services."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "_AIRFLOW", "AWS_", "RUNCOMFY_", "SEEDANCE_DEMO_"))
    }
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    pycache = default_pycache_dir()
    if pycache is not None:
        # As dev.py does: the demo process shares the components' bytecode cache.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.update(extra)
    return env


def _run_demo(
    args: list[str], env: dict[str, str], timeout: float = DEMO_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _processes_with_home(home: str) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("AIRFLOW_HOME") == home and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def _airflow_home(output: str) -> str:
    match = re.search(r"AIRFLOW_HOME=(\S+)", output)
    assert match, output
    return match.group(1)


@pytest.fixture
def stand_in_api() -> Iterator[SeedanceEmulator]:
    """The emulator, standing in for the real RunComfy host."""
    with SeedanceEmulator(token=TEST_TOKEN, plan=JobPlan(queue_seconds=1.0, run_seconds=3.0)) as emu:
        yield emu


@pytest.fixture
def stand_in_s3() -> Iterator[str]:
    """A moto S3 server with :data:`REAL_BUCKET`, standing in for AWS (the demo's own); yields its URL."""
    with _load_demo_module().embedded_s3(REAL_BUCKET) as endpoint:
        yield endpoint


@functools.cache
def _load_demo_module() -> ModuleType:
    return load_script(DEMO, "seedance_demo_script")


def test_every_demo_command_in_the_docs_is_accepted() -> None:
    demo = _load_demo_module()
    commands = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        for line in doc.read_text().splitlines():
            words = shlex.split(line.split("#", 1)[0]) if "dev.py demo" in line else []
            # Skip prose mentions; keep shell lines (optionally prefixed with VAR=value assignments).
            while words and "=" in words[0] and not words[0].startswith("-"):
                words.pop(0)
            if words[:3] == ["python3", "dev.py", "demo"]:
                commands.append(words[3:])
    assert len(commands) >= 5, commands
    for args in commands:
        parsed = demo.parse_args(args)
        assert parsed.real == ("--real" in args)


def test_default_demo_runs_the_flagship_dag_end_to_end(tmp_path: Path) -> None:
    result = _run_demo(["--quick", "--output-dir", str(tmp_path)], _demo_env())

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deferred: worker slot released" in output
    assert "is generating" in output
    assert re.search(r"deferred\s+yes: \d+\.\d s without a worker slot", output), output
    assert re.search(r"submits\s+1 ", output), output
    uri = re.search(r"video in S3\s+(s3://seedance-demo/seedance/\S+\.mp4)", output)
    assert uri, output
    copy = re.search(r"local copy\s+(\S+\.mp4)", output)
    assert copy, output
    video = Path(copy.group(1))
    assert video.parent == tmp_path.resolve()
    assert video.read_bytes()[4:8] == b"ftyp"
    assert "asset updated" in output
    assert "stopped: no process left behind" in output
    assert _processes_with_home(_airflow_home(output)) == []
    assert not Path(_airflow_home(output)).exists()


def test_real_mode_refuses_to_submit_without_explicit_opt_in(stand_in_api: SeedanceEmulator) -> None:
    env = _demo_env(RUNCOMFY_API_TOKEN=TEST_TOKEN)

    result = _run_demo(
        ["--real", "--bucket", REAL_BUCKET, "--base-url", stand_in_api.base_url], env, timeout=120
    )

    output = result.stdout + result.stderr
    assert result.returncode == EXIT_BILLING_NOT_CONFIRMED, output
    assert "NOT submitting" in output
    assert "--yes-i-will-be-billed" in output
    assert "SEEDANCE_DEMO_CONFIRM_BILLING=1" in output
    assert re.search(r"price\s+about \d+\.\d\d USD", output), output
    assert stand_in_api.state.count("submit") == 0
    assert TEST_TOKEN not in output
    assert "AIRFLOW_HOME=" not in output  # nothing was started


def test_real_mode_without_a_token_says_how_to_give_one(stand_in_api: SeedanceEmulator) -> None:
    result = _run_demo(
        ["--real", "--bucket", REAL_BUCKET, "--base-url", stand_in_api.base_url, "--yes-i-will-be-billed"],
        _demo_env(),
        timeout=120,
    )

    assert result.returncode == 1
    assert "RUNCOMFY_API_TOKEN" in result.stdout
    assert stand_in_api.state.count("submit") == 0


def test_real_mode_checks_the_bucket_before_paying_for_a_video(
    stand_in_api: SeedanceEmulator, stand_in_s3: str
) -> None:
    env = _demo_env(RUNCOMFY_API_TOKEN=TEST_TOKEN, AWS_ENDPOINT_URL_S3=stand_in_s3)
    args = [
        "--real",
        "--bucket",
        "no-such-bucket",
        "--base-url",
        stand_in_api.base_url,
        "--yes-i-will-be-billed",
    ]

    result = _run_demo(args, env, timeout=120)

    assert result.returncode == 1
    assert "Cannot use bucket 'no-such-bucket'" in result.stdout
    assert "Nothing was submitted" in result.stdout
    assert stand_in_api.state.count("submit") == 0
    assert "AIRFLOW_HOME=" not in result.stdout


def test_failure_excerpt_quotes_the_failed_tasks_log(tmp_path: Path) -> None:
    from airflow_provider_seedance.testing.local_airflow import TaskInstanceInfo

    log = tmp_path / "attempt=1.log"
    log.write_text(
        '{"level": "info", "event": "Submitted a generation: request_id=r1"}\n'
        '{"level": "error", "event": "Task failed with exception", "error_detail": [{"exc_value": "boom"}]}\n'
    )
    failed = TaskInstanceInfo("generate_video", -1, "failed", 1, None, None, None, True, (log,))
    fine = TaskInstanceInfo("store_video", -1, "upstream_failed", 1, None, None, None, False, ())

    class StubAirflow:
        def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceInfo]:
            return [failed, fine]

        def log_excerpt(self, lines: int) -> str:
            return "--- scheduler ---"

    excerpt = _load_demo_module().failure_excerpt(StubAirflow(), "run")

    assert "--- task generate_video (try 1, failed) ---" in excerpt
    assert "Task failed with exception" in excerpt
    assert "boom" in excerpt
    assert "--- task store_video (try 1, upstream_failed) ---" in excerpt
    assert excerpt.endswith("--- scheduler ---")


def test_real_mode_runs_the_same_dag_against_the_real_host_stand_ins(
    stand_in_api: SeedanceEmulator, stand_in_s3: str, tmp_path: Path
) -> None:
    import boto3

    # The opt-in through the environment variable; the token as a connection (JSON form).
    env = _demo_env(
        AIRFLOW_CONN_SEEDANCE_DEFAULT=(
            f'{{"conn_type": "seedance", "host": "{stand_in_api.base_url}", "password": "{TEST_TOKEN}"}}'
        ),
        SEEDANCE_DEMO_CONFIRM_BILLING="1",
        AWS_ENDPOINT_URL_S3=stand_in_s3,
    )

    result = _run_demo(["--real", "--bucket", REAL_BUCKET, "--output-dir", str(tmp_path)], env)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Billing confirmed" in output
    assert stand_in_api.state.count("submit") == 1
    uri = re.search(rf"video in S3\s+(s3://{REAL_BUCKET}/seedance/\S+\.mp4)", output)
    assert uri, output
    key = uri.group(1).removeprefix(f"s3://{REAL_BUCKET}/")
    s3 = boto3.client(
        "s3",
        endpoint_url=stand_in_s3,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    head = s3.head_object(Bucket=REAL_BUCKET, Key=key)
    assert head["ContentLength"] > 0
    assert head["Metadata"]["sha256"]
    assert TEST_TOKEN not in output
    assert _processes_with_home(_airflow_home(output)) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_every_process_and_cancels_the_queued_request(
    stand_in_api: SeedanceEmulator, stand_in_s3: str, tmp_path: Path
) -> None:
    # Real mode against the stand-ins, interrupted while the task is deferred and the request still queued:
    # the worst moment (task supervisors and the trigger runner live in process groups of their own).
    stand_in_api.set_plan(JobPlan(queue_seconds=600.0, run_seconds=1.0))
    env = _demo_env(RUNCOMFY_API_TOKEN=TEST_TOKEN, AWS_ENDPOINT_URL_S3=stand_in_s3)
    args = ["--real", "--bucket", REAL_BUCKET, "--base-url", stand_in_api.base_url, "--yes-i-will-be-billed"]
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), *args, "--output-dir", str(tmp_path)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As from a terminal: a suite started in the background (`cmd &`, nohup) hands its children SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler, so Ctrl-C would do nothing.
        preexec_fn=_default_sigint,
    )
    lines: list[str] = []
    home = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "AIRFLOW_HOME=" in line:
                home = _airflow_home(line)
            if "deferred: worker slot released" in line:
                break
        assert home, "".join(lines)
        assert _processes_with_home(home), "".join(lines)
        # Ctrl-C in a terminal signals the foreground process group: the demo, not the Airflow processes.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # the demo prints every thread's stack (faulthandler)
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
            pytest.fail("The demo did not stop within 120 s of Ctrl-C:\n" + "".join(lines) + rest)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines)
    assert proc.returncode == EXIT_INTERRUPTED, output
    assert "Interrupted" in output
    assert "it was still queued, nothing is billed" in output
    assert stand_in_api.state.count("cancel") == 1
    assert "stopped: no process left behind" in output
    assert _processes_with_home(home) == []
