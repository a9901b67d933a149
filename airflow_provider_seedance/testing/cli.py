"""The ``seedance-emulator`` console script: run the API emulator until SIGINT or SIGTERM.

Example::

    seedance-emulator --port 8765 --token my-token --queue-seconds 1 --run-seconds 5 --fail-rate 0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_seedance.testing._net import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV_VAR = "SEEDANCE_EMULATOR_TOKEN"
"""Environment variable read for the token when ``--token`` is not given."""

CLI_QUEUE_SECONDS = 2.0
"""Queue time of the CLI's jobs: long enough to watch a status change, short enough for a demo."""

CLI_RUN_SECONDS = 8.0
"""Generation time of the CLI's jobs."""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_WAKE_SECONDS = 0.5


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _rate(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(|K|M|G|KB|MB|GB|KiB|MiB|GiB)\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of bytes per second (e.g. 25MB), got {text}"
        )
    unit = match.group(2).lower()
    scale = {"": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9}.get(unit)
    if scale is None:
        scale = {"kib": 1024, "mib": 1024**2, "gib": 1024**3}[unit]
    return max(1, int(float(match.group(1)) * scale))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``seedance-emulator``."""
    parser = argparse.ArgumentParser(
        prog="seedance-emulator",
        description="Run a local stand-in for the RunComfy Model API (ByteDance Seedance video generation).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--token",
        help=f"the accepted API token (default: ${TOKEN_ENV_VAR}, else a generated one, printed at start)",
    )
    parser.add_argument(
        "--queue-seconds",
        type=_non_negative,
        default=CLI_QUEUE_SECONDS,
        help="time each job waits in the queue (default: %(default)s)",
    )
    parser.add_argument(
        "--run-seconds",
        type=_non_negative,
        default=CLI_RUN_SECONDS,
        help="time each job spends generating (default: %(default)s)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_probability,
        default=0.0,
        help="share of jobs that fail, 0..1 (default: %(default)s)",
    )
    parser.add_argument(
        "--video-size-bytes",
        type=int,
        default=None,
        help="serve generated videos of exactly this size instead of the bundled 2 s sample MP4",
    )
    parser.add_argument(
        "--download-rate-limit",
        type=_rate,
        default=None,
        metavar="BYTES_PER_SECOND",
        help="serve each download connection at most this fast, like a CDN limiting every connection "
        "(e.g. 25MB = 25,000,000 bytes/s, 3MiB; default: unlimited)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the random failures, for reproducible runs"
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="warning", help="server log level (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the emulator has no TLS and its control endpoints no auth)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the emulator until SIGINT or SIGTERM; return the process exit code.

    :param argv: the command-line arguments (``sys.argv[1:]`` when ``None``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(
            f"--host {args.host} is not a loopback address; pass --allow-remote to listen on it anyway"
        )

    # The web stack is imported only once the arguments are known to be good (fast --help and errors).
    from pydantic import ValidationError

    from airflow_provider_seedance.testing.server import CONNECTION_ENV_VAR, SeedanceEmulator
    from airflow_provider_seedance.testing.state import EmulatorState, JobPlan

    token = args.token or os.environ.get(TOKEN_ENV_VAR) or ""
    generated = not token
    token = token or secrets.token_urlsafe(24)
    try:
        plan = JobPlan(
            queue_seconds=args.queue_seconds,
            run_seconds=args.run_seconds,
            fail_probability=args.fail_rate,
            video_size_bytes=args.video_size_bytes,
        )
    except ValidationError as err:
        parser.error(f"invalid job settings: {err}")

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    emulator = SeedanceEmulator(
        token,
        host=args.host,
        port=args.port,
        state=EmulatorState(token, plan=plan, seed=args.seed, download_rate_limit=args.download_rate_limit),
        log_level=args.log_level,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except (OSError, RuntimeError) as err:
            print(f"seedance-emulator: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
            return 1
        connection = json.dumps({"conn_type": "seedance", "host": emulator.base_url, "password": token})
        lines = [
            f"Seedance emulator (RunComfy Model API stand-in) listening on {emulator.base_url}",
            f"API token: {token}"
            + (f" (generated; pass --token or set {TOKEN_ENV_VAR} to choose one)" if generated else ""),
            f"Jobs: {args.queue_seconds:g} s in queue, {args.run_seconds:g} s generating, "
            f"fail rate {args.fail_rate:.0%}",
            "Point Airflow at it with:",
            f"  export {CONNECTION_ENV_VAR}={shlex.quote(connection)}",
            f"Control endpoints: {emulator.base_url}/_emulator/health (see docs/emulator.md)",
            "Press Ctrl+C to stop.",
        ]
        print("\n".join(lines), flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(_WAKE_SECONDS):
            if not emulator.running:
                print("seedance-emulator: the server stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Seedance emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
