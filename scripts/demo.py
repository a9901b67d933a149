#!/usr/bin/env python3
"""Run the flagship example DAG end to end through a real Airflow scheduler and triggerer.

By default everything is local and free: the package's RunComfy API emulator, an embedded S3 (moto) and
an isolated Airflow 3 (api-server, scheduler, dag-processor, triggerer on SQLite in a temp
``AIRFLOW_HOME``). The demo triggers ``example_seedance_to_s3``, prints what happens while it happens
(request id, queue position, generation, deferral, the copy to S3), downloads the video into ``.demo/``
and stops every process it started, also on failure and Ctrl-C.

``--real --bucket B`` runs the same DAG against the real RunComfy API (token from ``RUNCOMFY_API_TOKEN``
or ``AIRFLOW_CONN_SEEDANCE_DEFAULT``) and real S3 (boto3's credential chain, or
``AIRFLOW_CONN_AWS_DEFAULT``). That is billed, so it only submits with ``--yes-i-will-be-billed`` (or
``SEEDANCE_DEMO_CONFIRM_BILLING=1``); without it, it prints what it would do and exits.

Run it with ``python3 dev.py demo [options]``; ``--help`` lists the options. See docs/quickstart.md.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run from a checkout: the package next to this script is the one demonstrated.
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from airflow_provider_seedance._state_log import LoggedState
    from airflow_provider_seedance.hooks.seedance import SeedanceHook
    from airflow_provider_seedance.testing import SeedanceEmulator
    from airflow_provider_seedance.testing.local_airflow import LocalAirflow, TaskInstanceInfo

DAG_ID = "example_seedance_to_s3"
GENERATE_TASK = "generate_video"
STORE_TASK = "store_video"
DAGS_FOLDER = ROOT / "example_dags"
DEFAULT_OUTPUT_DIR = ROOT / ".demo"
DEFAULT_BUCKET = "seedance-demo"
CONNECTION_ENV = "AIRFLOW_CONN_SEEDANCE_DEFAULT"
"""Where Airflow, and so the demo, finds the ``seedance_default`` connection."""

QUEUE_SECONDS = 3.0
"""Emulated time in the queue: long enough to see the queue position count down."""

RUN_SECONDS = 8.0
"""Emulated generation time: long enough to see the task deferred, its worker slot free."""

QUICK_QUEUE_SECONDS = 1.0
QUICK_RUN_SECONDS = 3.0
"""``--quick`` timeline (the test suite's run of the same code path)."""

EMULATED_RUN_TIMEOUT = 300.0
"""Seconds the emulated run may take once triggered (2 slow cores, cold imports)."""

REAL_RUN_TIMEOUT = 2400.0
"""Seconds the real run may take once triggered (a real generation can queue for minutes)."""

DAG_PARSE_TIMEOUT = 180.0
"""Seconds the dag-processor may take to parse the example DAGs."""

FOLLOW_POLL_SECONDS = 0.5
"""How often the demo reads task states and new log lines."""

API_TIMEOUT_SECONDS = 10.0
API_MAX_RETRIES = 1
"""The demo's own API calls (price, cancel on Ctrl-C) answer the user at once: short timeout, one retry."""

CONFIRM_FLAG = "--yes-i-will-be-billed"
CONFIRM_ENV = "SEEDANCE_DEMO_CONFIRM_BILLING"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BILLING_NOT_CONFIRMED = 3
EXIT_INTERRUPTED = 130

LOG_EXCERPT_RECORDS = 30
"""Task log lines quoted when a task fails."""

LABEL_WIDTH = 15

STATE_MEANING = {
    "queued": "queued for a worker slot",
    "running": "running on a worker",
    "deferred": "deferred: worker slot released, the triggerer now waits for the video",
    "up_for_retry": "failed, will be retried",
    "up_for_reschedule": "waiting to be rescheduled",
    "success": "succeeded",
    "failed": "FAILED",
    "upstream_failed": "not run (upstream failed)",
    "skipped": "skipped",
}
"""How a task state is shown; states missing here (none, scheduled) are not shown."""

REQUEST_STATE_LABELS: dict[str, str | None] = {
    "submitted": None,  # gives the request id; the summary's states start in the queue
    "queued": "queued",
    "generating": "in progress",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "timeout": "timed out",
    "error": "error",
}
"""How each request state the provider logs (its ``seedance_state`` field) is shown in the summary."""


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


class Console:
    """Print progress lines stamped with the seconds since the demo started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Return the seconds since the demo started."""
        return time.monotonic() - self.started

    def line(self, text: str = "") -> None:
        """
        Print a plain line.

        :param text: the text.
        """
        print(text, flush=True)

    def event(self, label: str, text: str) -> None:
        """
        Print a time-stamped line attributed to ``label`` (a task, a component or the demo).

        :param label: who it is about.
        :param text: what happened.
        """
        print(f"[{self.elapsed():6.1f}s] {label:<{LABEL_WIDTH}} {text}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# Command line and the real-mode guard
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """
    Parse the command line.

    :param argv: the arguments (without the program name).
    """
    from airflow_provider_seedance.get_provider_info import DEFAULT_BASE_URL

    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo",
        description="Run the flagship example DAG (image + prompt -> Seedance video -> S3) end to end "
        "through a real Airflow scheduler and triggerer. Default: local emulator and embedded S3, free.",
    )
    parser.add_argument("--quick", action="store_true", help="shorter emulated timeline (used by the tests)")
    parser.add_argument("--prompt", help="the video prompt (default: the DAG's)")
    parser.add_argument("--image-url", help="public URL of the first frame (default: the DAG's)")
    parser.add_argument("--resolution", choices=["480p", "720p", "1080p"], default="480p")
    parser.add_argument("--duration", type=int, default=5, help="seconds of video, 4-12 (default 5)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="where the local copy goes (default .demo/)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the Airflow home (logs, DB) afterwards")
    parser.add_argument("--timeout", type=float, help="seconds the DAG run may take once triggered")
    real = parser.add_argument_group("real services (billed)")
    real.add_argument("--real", action="store_true", help="use the real RunComfy API and real S3")
    real.add_argument("--bucket", help="S3 bucket for the video (required with --real)")
    real.add_argument(
        "--base-url",
        help=f"RunComfy API base URL (default {DEFAULT_BASE_URL}; the tests point it at the emulator)",
    )
    real.add_argument(
        CONFIRM_FLAG,
        dest="confirm_billing",
        action="store_true",
        help=f"confirm that --real may submit one paid generation (or set {CONFIRM_ENV}=1)",
    )
    args = parser.parse_args(argv)
    if not 4 <= args.duration <= 12:
        parser.error("--duration must be from 4 to 12 seconds")
    if args.real and not args.bucket:
        parser.error("--real needs --bucket <an S3 bucket you can write to>")
    if not args.real and (args.base_url or args.confirm_billing):
        parser.error(f"--base-url and {CONFIRM_FLAG} only apply with --real")
    return args


def billing_confirmed(args: argparse.Namespace) -> bool:
    """
    Return whether the user explicitly accepted a billed run (the flag, or the environment variable).

    :param args: the parsed command line.
    """
    from_env = os.environ.get(CONFIRM_ENV, "").strip().lower() in ("1", "true", "yes")
    return bool(args.confirm_billing) or from_env


@dataclass
class RealSettings:
    """
    Where a real-mode run goes, resolved before anything starts.

    :param base_url: the RunComfy API base URL.
    :param token_source: where the token came from (for messages; never the token itself).
    :param connection: the ``seedance_default`` connection as JSON, as the Airflow processes get it.
    """

    base_url: str
    token_source: str
    connection: str = field(repr=False)


def resolve_real_settings(args: argparse.Namespace) -> RealSettings:
    """
    Find the API token (``RUNCOMFY_API_TOKEN``, else ``AIRFLOW_CONN_SEEDANCE_DEFAULT``) and the base URL.

    The connection is read and checked by the hook, as a task would; the one handed to Airflow is also set
    in this process, so the demo's own API calls (price, cancel) go through the hook over the same one.

    :param args: the parsed command line.
    """
    from airflow_provider_seedance.exceptions import SeedanceConfigurationError
    from airflow_provider_seedance.hooks.seedance import (
        DEFAULT_CONN_ID,
        SeedanceConnectionConfig,
        SeedanceHook,
        normalize_base_url,
    )

    token = os.environ.get("RUNCOMFY_API_TOKEN", "").strip()
    source = "RUNCOMFY_API_TOKEN"
    host = ""
    extra: dict[str, Any] = {}
    if not token:
        if not os.environ.get(CONNECTION_ENV, "").strip():
            raise DemoError(
                "--real needs a RunComfy API token: export RUNCOMFY_API_TOKEN=<token> (or define the "
                f"seedance_default connection in {CONNECTION_ENV})."
            )
        source = CONNECTION_ENV
        try:
            conn = SeedanceHook.get_connection(DEFAULT_CONN_ID)
            config = SeedanceConnectionConfig.from_connection(conn, DEFAULT_CONN_ID)
        except SeedanceConfigurationError as exc:
            raise DemoError(f"{CONNECTION_ENV}: {exc}") from None
        except Exception as exc:
            # Airflow's parse errors may quote the value, token included: name the error only.
            raise DemoError(
                f"{CONNECTION_ENV} is not a valid connection, in JSON or URI form ({type(exc).__name__})."
            ) from None
        token, host = config.token, config.base_url
        extra = dict(conn.extra_dejson)
    try:
        base_url = normalize_base_url(args.base_url or host)
    except SeedanceConfigurationError as exc:
        raise DemoError(str(exc)) from None
    connection = json.dumps({"conn_type": "seedance", "host": base_url, "password": token, "extra": extra})
    os.environ[CONNECTION_ENV] = connection
    return RealSettings(base_url=base_url, token_source=source, connection=connection)


def api_hook() -> SeedanceHook:
    """Return a hook on ``seedance_default`` for the demo's own calls (short timeout, one retry)."""
    from airflow_provider_seedance.hooks.seedance import SeedanceHook

    return SeedanceHook(timeout=API_TIMEOUT_SECONDS, max_retries=API_MAX_RETRIES)


def estimate_price(duration: int) -> str:
    """
    Describe the expected price with the provider's cost guard rule (a free catalog GET), or say why not.

    :param duration: seconds of video requested.
    """
    from airflow_provider_seedance.cost import estimate_cost_usd
    from airflow_provider_seedance.exceptions import SeedanceError
    from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID

    hook = api_hook()
    try:
        info = hook.get_model(SEEDANCE_1_5_PRO_I2V_MODEL_ID)
    except SeedanceError as exc:
        return f"unknown (the model catalog could not be read: {exc})"
    finally:
        hook.close()
    estimate = estimate_cost_usd(info, {"duration": duration}, SEEDANCE_1_5_PRO_I2V_MODEL_ID)
    if estimate.usd is None:
        return f"unknown ({estimate.reason})"
    return f"about {estimate.usd:.2f} USD ({estimate.basis}, model catalog)"


def cancel_request(request_id: str) -> str:
    """
    Ask the API to cancel a request the user abandoned (best effort); say what it means for the bill.

    Only a queued request can be cancelled; a running one finishes and is billed.

    :param request_id: the request to cancel.
    """
    from airflow_provider_seedance.exceptions import SeedanceError

    hook = api_hook()
    try:
        outcome = hook.cancel(request_id)
    except SeedanceError as exc:
        return (
            f"Could not cancel request {request_id} ({type(exc).__name__}): "
            "check it in your RunComfy history."
        )
    finally:
        hook.close()
    if outcome.cancelled:
        return f"Cancelled request {request_id}: it was still queued, nothing is billed for it."
    return (
        f"Request {request_id} could not be cancelled (outcome {outcome.outcome!r}): "
        "a request already generating finishes and is billed."
    )


def check_aws_destination(bucket: str) -> None:
    """
    Check that boto3 finds credentials and can reach the bucket, before anything is paid for.

    :param bucket: the destination bucket.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if os.environ.get("AIRFLOW_CONN_AWS_DEFAULT"):
        # The tasks will use that connection, which only Airflow can interpret: nothing to check here.
        return
    session = boto3.Session()
    if session.get_credentials() is None:
        raise DemoError(
            "No AWS credentials found (boto3's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "~/.aws, an instance role). Configure them, then run again. Nothing was submitted."
        )
    try:
        session.client("s3").head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise DemoError(
            f"Cannot use bucket {bucket!r} with these AWS credentials ({exc}). Nothing was submitted."
        ) from None


# ---------------------------------------------------------------------------------------------------------
# Embedded S3
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_s3(bucket: str) -> Iterator[str]:
    """
    Run a moto S3 server on 127.0.0.1 with ``bucket`` created; yield its endpoint URL.

    :param bucket: the bucket to create.
    """
    from moto.server import ThreadedMotoServer

    from airflow_provider_seedance.testing.local_airflow import free_port

    # The server logs every S3 call; the transfer task's own log already says what was copied.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str | None) -> Any:
    """
    Return a boto3 S3 client: for the embedded server (fixed test credentials), or AWS's default chain.

    :param endpoint: the embedded server's URL, or ``None`` for AWS.
    """
    import boto3

    if endpoint is None:
        return boto3.client("s3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# ---------------------------------------------------------------------------------------------------------
# Following the run
# ---------------------------------------------------------------------------------------------------------


class RunFollower:
    """
    Print a run's progress as it happens: task state changes and the provider's own log lines.

    :param airflow: the running Airflow.
    :param run_id: the run followed.
    :param console: where to print.
    """

    def __init__(self, airflow: LocalAirflow, run_id: str, console: Console) -> None:
        self.airflow = airflow
        self.run_id = run_id
        self.console = console
        self.states: dict[str, str | None] = {}
        self.seen_records: dict[Path, int] = {}
        self.request_states: list[str] = []
        self.request_id: str | None = None
        self.polls_in_state: dict[tuple[str, str], int] = {}

    def poll(self) -> list[TaskInstanceInfo]:
        """Print what changed since the last poll; return the task instances."""
        tis = self.airflow.task_instances(DAG_ID, self.run_id)
        for ti in tis:
            self._new_log_lines(ti)
            previous = self.states.get(ti.task_id)
            if previous != ti.state:
                self.states[ti.task_id] = ti.state
                if ti.state in STATE_MEANING:
                    text = STATE_MEANING[ti.state]
                    if ti.state == "running" and previous == "deferred":
                        text = "running on a worker again: resumed with the trigger's event"
                    self.console.event(ti.task_id, text)
        return tis

    def _new_log_lines(self, ti: TaskInstanceInfo) -> None:
        from airflow_provider_seedance.testing.local_airflow import read_log_records

        for path in ti.log_files:
            records = list(read_log_records(path))
            start = self.seen_records.get(path, 0)
            self.seen_records[path] = len(records)
            source = "  (triggerer)" if ".trigger." in path.name else f"  ({ti.task_id})"
            for record in records[start:]:
                self._show(source, record)

    def _show(self, source: str, record: Mapping[str, Any]) -> None:
        logger = str(record.get("logger") or "").lower()
        level = str(record.get("level") or "info").lower()
        event = str(record.get("event") or "").strip()
        if not event or level == "debug":
            return
        if "seedance" not in logger:
            # Only the provider's narrative is shown; Airflow's own errors are shown too.
            if level in ("error", "critical"):
                self.console.event(source, f"{level.upper()}: {event.splitlines()[0]}")
            return
        self._track(record)
        prefix = "" if level == "info" else f"{level.upper()}: "
        self.console.event(source, prefix + event.splitlines()[0])

    def _track(self, record: Mapping[str, Any]) -> None:
        from airflow_provider_seedance._state_log import read_state

        logged = read_state(record)
        if logged is None:
            return
        if self.request_id is None:
            self.request_id = logged.request_id
        label = request_state_label(logged)
        if label is not None and (not self.request_states or self.request_states[-1] != label):
            self.request_states.append(label)


def request_state_label(logged: LoggedState) -> str | None:
    """
    Return how a logged request state is shown in the summary (``None``: not shown).

    :param logged: the state fields of a provider log record.
    """
    if logged.state == "queued" and logged.queue_position is not None:
        return f"queued (position {logged.queue_position})"
    return REQUEST_STATE_LABELS.get(logged.state, logged.state)


@dataclass
class TaskTimes:
    """
    Where one task's time went, from its start/end dates and log timestamps.

    :param total: seconds from its first start to its end.
    :param deferred: seconds between pausing as deferred and resuming on a worker.
    :param in_trigger: seconds its trigger ran in the triggerer (a part of ``deferred``).
    """

    total: float | None = None
    deferred: float = 0.0
    in_trigger: float = 0.0

    @property
    def worker(self) -> float | None:
        """Seconds on a worker: the total minus the time deferred."""
        return None if self.total is None else max(0.0, self.total - self.deferred)


def task_times(ti: TaskInstanceInfo) -> TaskTimes:
    """
    Work out a finished task's time on a worker and time deferred.

    :param ti: the task instance.
    """
    from airflow_provider_seedance.testing.local_airflow import read_log_records

    times = TaskTimes()
    if ti.start_date and ti.end_date:
        times.total = (_parse_time(ti.end_date) - _parse_time(ti.start_date)).total_seconds()
    for path in ti.log_files:
        records = list(read_log_records(path))
        stamps = [
            (_parse_time(str(r["timestamp"])), str(r.get("event") or ""))
            for r in records
            if r.get("timestamp")
        ]
        if ".trigger." in path.name:
            if len(stamps) >= 2:
                times.in_trigger += (stamps[-1][0] - stamps[0][0]).total_seconds()
            continue
        paused: datetime | None = None
        for stamp, event in stamps:
            if event.startswith("Pausing task as DEFERRED"):
                paused = stamp
            elif paused is not None and event.startswith("::group::Pre Execute"):
                times.deferred += (stamp - paused).total_seconds()
                paused = None
    return times


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def failure_excerpt(airflow: LocalAirflow, run_id: str) -> str:
    """
    Return the log lines that explain a failed run: each failed task's last lines, then the components'.

    :param airflow: the running Airflow.
    :param run_id: the failed run.
    """
    from airflow_provider_seedance.testing.local_airflow import read_log_records

    parts = []
    with contextlib.suppress(Exception):
        for ti in airflow.task_instances(DAG_ID, run_id):
            if ti.state not in ("failed", "up_for_retry", "upstream_failed"):
                continue
            lines = []
            for path in ti.log_files:
                for record in read_log_records(path):
                    text = str(record.get("event") or "")
                    if record.get("error_detail"):
                        text += f" {json.dumps(record['error_detail'])[:1500]}"
                    lines.append(f"  {str(record.get('level', '')).upper():<8} {text}")
            parts.append(
                f"--- task {ti.task_id} (try {ti.try_number}, {ti.state}) ---\n"
                + "\n".join(lines[-LOG_EXCERPT_RECORDS:])
            )
    parts.append(airflow.log_excerpt(lines=15))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """
    What the run produced, for the summary.

    :param request_id: the Seedance request.
    :param s3_uris: where the video(s) landed.
    :param objects: the transfer's per-object details (size, sha256).
    :param local_copies: the downloaded copies.
    :param submits: submits the emulator received (``None`` against the real API).
    """

    request_id: str | None = None
    s3_uris: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    local_copies: list[Path] = field(default_factory=list)
    submits: int | None = None


def run_demo(args: argparse.Namespace, console: Console) -> int:
    """
    Start the services, run the DAG, print the summary; return the exit code.

    :param args: the parsed command line.
    :param console: where to print.
    """
    from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID as MODEL_ID

    real = resolve_real_settings(args) if args.real else None
    bucket = args.bucket or DEFAULT_BUCKET
    if real is not None:
        console.line("Real mode: the real RunComfy API and real S3.")
        console.line(f"  API           {real.base_url} (token from {real.token_source})")
        console.line(f"  generation    {MODEL_ID}, {args.resolution}, {args.duration} s, with audio")
        console.line(f"  price         {estimate_price(args.duration)}")
        console.line(f"  destination   s3://{bucket}/seedance/<date>/<request id>-0.mp4")
        if not billing_confirmed(args):
            console.line("")
            console.line("NOT submitting: a real generation is billed to your RunComfy account.")
            console.line(f"Run again with {CONFIRM_FLAG} (or {CONFIRM_ENV}=1) to submit exactly one request.")
            return EXIT_BILLING_NOT_CONFIRMED
        check_aws_destination(bucket)
        console.line("")
        console.line("Billing confirmed: exactly one generation will be submitted.")

    with contextlib.ExitStack() as stack:
        env: dict[str, str | None] = {"SEEDANCE_EXAMPLE_BUCKET": bucket}
        s3_endpoint: str | None = None
        emulator = None
        if real is None:
            from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator

            queue, run = (
                (QUICK_QUEUE_SECONDS, QUICK_RUN_SECONDS) if args.quick else (QUEUE_SECONDS, RUN_SECONDS)
            )
            token = f"demo-{secrets.token_hex(12)}"
            emulator = stack.enter_context(
                SeedanceEmulator(token=token, plan=JobPlan(queue_seconds=queue, run_seconds=run))
            )
            s3_endpoint = stack.enter_context(embedded_s3(bucket))
            env.update(emulated_env(emulator.connection_json(), s3_endpoint))
            console.line("Seedance demo: the flagship DAG on local stand-ins (nothing is billed).")
            console.line(
                f"  RunComfy API  emulator at {emulator.base_url} (queue ~{queue:g} s, generation ~{run:g} s)"
            )
            console.line(f"  S3            embedded moto server at {s3_endpoint}, bucket {bucket}")
        else:
            env[CONNECTION_ENV] = real.connection
            if os.environ.get("AIRFLOW_CONN_AWS_DEFAULT"):
                env["AIRFLOW_CONN_AWS_DEFAULT"] = os.environ["AIRFLOW_CONN_AWS_DEFAULT"]

        from airflow_provider_seedance.testing.local_airflow import LocalAirflow, LocalAirflowError

        airflow = LocalAirflow(DAGS_FOLDER, env=env, keep_home=args.keep)
        stack.callback(stop_airflow, airflow, console)
        console.line(f"  Airflow       AIRFLOW_HOME={airflow.home}")
        console.line("")
        try:
            return run_and_report(airflow, console, args, real, emulator, s3_endpoint)
        except (DemoError, LocalAirflowError):
            airflow.keep_home = True  # for the post-mortem: the error quotes only the logs' tails
            raise


def run_and_report(
    airflow: LocalAirflow,
    console: Console,
    args: argparse.Namespace,
    real: RealSettings | None,
    emulator: SeedanceEmulator | None,
    s3_endpoint: str | None,
) -> int:
    """
    Start Airflow, run the DAG while printing its progress, then download the video and print the summary.

    :param airflow: the Airflow to start (stopped by the caller).
    :param console: where to print.
    :param args: the parsed command line.
    :param real: the real services, or ``None`` for the stand-ins.
    :param emulator: the emulator, when emulated.
    :param s3_endpoint: the embedded S3's URL, when emulated.
    """
    run_id = start_and_trigger(airflow, console, args)
    follower = RunFollower(airflow, run_id, console)
    timeout = args.timeout or (REAL_RUN_TIMEOUT if real else EMULATED_RUN_TIMEOUT)
    try:
        state = follow(airflow, follower, run_id, timeout)
    except KeyboardInterrupt:
        if real is not None:
            request_id = follower.request_id
            if request_id is None:
                # Submitted, but its log line not read yet: the operator pushed the id to XCom at once.
                with contextlib.suppress(Exception):
                    request_id = str(airflow.xcom(DAG_ID, run_id, GENERATE_TASK, key="request_id"))
            if request_id:
                console.line("")
                console.line(cancel_request(request_id))
        raise
    tis = {ti.task_id: ti for ti in follower.poll()}
    if state != "success":
        airflow.keep_home = True
        console.line("")
        console.line(f"The DAG run ended {state!r}. What the logs say:")
        console.line(failure_excerpt(airflow, run_id))
        return EXIT_FAILED

    outcome = collect_outcome(airflow, run_id, follower)
    if emulator is not None:
        outcome.submits = emulator.state.count("submit")
    try:
        outcome.local_copies = download_copies(outcome.s3_uris, s3_endpoint, args.output_dir)
    except Exception as exc:
        # The video is in S3 all the same; a local copy is a convenience.
        console.line(f"Could not download a local copy ({type(exc).__name__}: {exc}).")
    print_summary(console, airflow, tis, follower, outcome, run_id)
    return EXIT_OK


def emulated_env(connection: str, s3_endpoint: str) -> dict[str, str | None]:
    """
    Return the Airflow processes' environment for an emulated run: connections to the local stand-ins.

    :param connection: the ``seedance_default`` connection to the emulator (JSON form).
    :param s3_endpoint: the embedded S3's URL.
    """
    return {
        CONNECTION_ENV: connection,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
            }
        ),
        # Nothing real is reachable from an emulated run, whatever the shell exports.
        "RUNCOMFY_API_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_ENDPOINT_URL": None,
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_and_trigger(airflow: LocalAirflow, console: Console, args: argparse.Namespace) -> str:
    """
    Start Airflow, wait until it is healthy and the DAG parsed, unpause and trigger it; return the run id.

    :param airflow: the Airflow to start.
    :param console: where to print.
    :param args: the parsed command line (the run's conf).
    """
    console.event("airflow", "starting: db migrate, then api-server, scheduler, dag-processor, triggerer")
    airflow.start()
    console.event("airflow", f"API server on {airflow.api_url}; waiting for every component to be healthy")
    airflow.wait_ready()
    console.event("airflow", "ready: scheduler, dag-processor and triggerer are heartbeating")
    airflow.wait_for_dags(DAG_ID, timeout=DAG_PARSE_TIMEOUT)
    airflow.unpause(DAG_ID)
    conf: dict[str, Any] = {"resolution": args.resolution, "duration": args.duration}
    if args.prompt:
        conf["prompt"] = args.prompt
    if args.image_url:
        conf["image_url"] = args.image_url
    run_id = airflow.trigger(DAG_ID, conf=conf)
    console.event("airflow", f"triggered {DAG_ID}: run {run_id}")
    return run_id


def follow(airflow: LocalAirflow, follower: RunFollower, run_id: str, timeout: float) -> str:
    """
    Print the run's progress until it ends; return its final state.

    :param airflow: the running Airflow.
    :param follower: the progress printer.
    :param run_id: the run.
    :param timeout: seconds before giving up (:class:`DemoError`, with the logs' tails).
    """
    deadline = time.monotonic() + timeout
    while True:
        airflow.check_alive()
        follower.poll()
        state = airflow.run_state(DAG_ID, run_id)
        if state in ("success", "failed"):
            return state
        if time.monotonic() > deadline:
            airflow.keep_home = True
            raise DemoError(
                f"The DAG run did not finish within {timeout:.0f} s (state {state!r}).\n"
                + failure_excerpt(airflow, run_id)
            )
        time.sleep(FOLLOW_POLL_SECONDS)


def collect_outcome(airflow: LocalAirflow, run_id: str, follower: RunFollower) -> Outcome:
    """
    Read the request id, the S3 URIs and the per-object details from XCom.

    :param airflow: the running Airflow.
    :param run_id: the finished run.
    :param follower: what was seen during the run.
    """
    from airflow_provider_seedance.testing.local_airflow import LocalAirflowError

    outcome = Outcome(request_id=follower.request_id)
    with contextlib.suppress(LocalAirflowError):
        outcome.request_id = str(airflow.xcom(DAG_ID, run_id, GENERATE_TASK, key="request_id"))
    uris = airflow.xcom(DAG_ID, run_id, STORE_TASK)
    outcome.s3_uris = [str(u) for u in (uris if isinstance(uris, list) else [uris])]
    with contextlib.suppress(LocalAirflowError):
        objects = airflow.xcom(DAG_ID, run_id, STORE_TASK, key="objects")
        if isinstance(objects, list):
            outcome.objects = [o for o in objects if isinstance(o, dict)]
    return outcome


def download_copies(uris: list[str], endpoint: str | None, output_dir: Path) -> list[Path]:
    """
    Download each ``s3://`` object into ``output_dir``; return the local paths.

    :param uris: the objects.
    :param endpoint: the embedded S3's URL, or ``None`` for AWS.
    :param output_dir: where the copies go.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    client = s3_client(endpoint)
    paths = []
    for uri in uris:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target = output_dir / key.rsplit("/", 1)[-1]
        client.download_file(bucket, key, str(target))
        paths.append(target.resolve())
    return paths


def print_summary(
    console: Console,
    airflow: LocalAirflow,
    tis: Mapping[str, TaskInstanceInfo],
    follower: RunFollower,
    outcome: Outcome,
    run_id: str,
) -> None:
    """
    Print what happened: the request, its states, time deferred vs on a worker, where the video is.

    :param console: where to print.
    :param airflow: the running Airflow.
    :param tis: the run's task instances by task id.
    :param follower: what was seen during the run.
    :param outcome: what the run produced.
    :param run_id: the run.
    """
    from airflow_provider_seedance.testing.local_airflow import LocalAirflowError

    console.line("")
    console.line("Summary")
    console.line(f"  DAG run          {DAG_ID} / {run_id}: success")
    console.line(f"  request id       {outcome.request_id}")
    if follower.request_states:
        console.line(f"  request states   {' -> '.join(follower.request_states)}")
    if outcome.submits is not None:
        console.line(f"  submits          {outcome.submits} (as the emulator counted them)")
    generate = tis.get(GENERATE_TASK)
    if generate is not None:
        times = task_times(generate)
        console.line(
            f"  deferred         {'yes' if generate.deferred else 'NO'}: "
            f"{times.deferred:.1f} s without a worker slot (of which the trigger ran "
            f"{times.in_trigger:.1f} s in the triggerer)"
        )
        if times.worker is not None:
            console.line(f"  on a worker      {times.worker:.1f} s for {GENERATE_TASK} (submit, then resume)")
    store = tis.get(STORE_TASK)
    if store is not None and store.duration is not None:
        console.line(f"                   {store.duration:.1f} s for {STORE_TASK} (streamed copy to S3)")
    details = {o.get("uri"): o for o in outcome.objects}
    for uri in outcome.s3_uris:
        info = details.get(uri) or {}
        extra = ""
        if isinstance(info.get("size"), int):
            extra = f" ({info['size']:,} bytes, sha256 {str(info.get('sha256') or '')[:12]}...)"
        console.line(f"  video in S3      {uri}{extra}")
    for path in outcome.local_copies:
        console.line(f"  local copy       {path}")
    with contextlib.suppress(LocalAirflowError, KeyError, TypeError):
        events = airflow.api("GET", "/api/v2/assets/events", params={"limit": 20})["asset_events"]
        for event in events:
            if event.get("source_dag_id") == DAG_ID and event.get("source_run_id") == run_id:
                console.line(f"  asset updated    {event.get('uri')} (event {event.get('id')})")
    console.line(f"  wall time        {console.elapsed():.1f} s (Airflow start-up included)")
    console.line("")


def stop_airflow(airflow: LocalAirflow, console: Console) -> None:
    """
    Stop every Airflow process and say so; a second Ctrl-C cannot cut this short.

    :param airflow: the Airflow to stop.
    :param console: where to print.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        console.event("airflow", "stopping every process the demo started")
        airflow.stop()
        left = airflow.running_processes()
        if left:
            console.event("airflow", f"WARNING: processes still running: {left}")
        else:
            details = ", ".join(
                f"{name} {what}" for name, what in airflow.stop_report.items() if name != "total"
            )
            console.event("airflow", f"stopped: no process left behind ({details})")
        if airflow.keep_home:
            console.event("airflow", f"logs and DB kept in {airflow.home} (processes/, logs/)")
    finally:
        signal.signal(signal.SIGINT, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so the clean-up in ``finally`` blocks runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """
    Run the demo; return the exit code (0 success, 1 failure, 3 billing not confirmed, 130 interrupted).

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    # This process imports the package, and so Airflow (the command line too, for the defaults): give it a
    # scratch home, so that it never writes ~/airflow nor reads the caller's Airflow configuration.
    scratch = tempfile.mkdtemp(prefix="seedance-demo-client-")
    os.environ["AIRFLOW_HOME"] = scratch
    # The story is the demo's own lines; its few API calls (price, cancel) log only what goes wrong. The
    # Airflow processes it starts get none of this process's AIRFLOW_* variables.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    console = Console()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _terminate)
        if hasattr(signal, "SIGUSR1"):
            # `kill -USR1 <pid>` prints where every thread is: for a demo that seems stuck.
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        from airflow_provider_seedance.testing.local_airflow import LocalAirflowError

        try:
            return run_demo(args, console)
        except (DemoError, LocalAirflowError) as exc:
            console.line(f"\nDemo failed: {exc}")
            return EXIT_FAILED
    except KeyboardInterrupt:
        console.line("\nInterrupted: every process the demo started has been stopped.")
        return EXIT_INTERRUPTED
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
