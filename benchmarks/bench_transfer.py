#!/usr/bin/env python3
"""Benchmark: copy one large generated video from the Seedance emulator to S3 (moto server), several ways.

Methods, each run in a fresh Python process so its peak RSS is its own:

* ``seedance``: this provider's ``SeedanceToS3Operator`` with its defaults: one multipart upload straight
  to the final key (CRC32 per part, SHA-256 computed on the way and reported), the file fetched in
  parallel ranges over ``download_connections`` (3) connections.
* ``seedance_single``: the same over one connection (``download_connections=1``): one stream.
* ``seedance_sha256``: ``sha256_metadata=True`` (``staging="s3"``): staged multipart upload + server-side
  copy that sets the ``sha256`` metadata (the default before the one-pass rule).
* ``seedance_local``: ``sha256_metadata=True, staging="local"``: spooled to an unnamed local temporary
  file, then one parallel multipart upload that carries the metadata from the start.
* ``http_to_s3``: Amazon's ``HttpToS3Operator`` (``requests`` reads the whole body, then ``load_bytes``).
* ``reference``: a plain httpx stream behind a file-like adapter, fed to boto3's ``upload_fileobj``.
* ``reference_sha256``: the same, also computing the SHA-256 of what it reads (the work the SPEC asks of
  our copy on top of the reference's): how much of a gap to the reference is that hash.

Two scenarios, in one run: the emulator serving as fast as it can, then serving each connection at a
fixed rate (``--rate-limit``, 25 MB/s by default: a CDN that limits every connection). The emulator
(``seedance-emulator``) and ``moto_server`` run as separate processes on 127.0.0.1. Each worker imports
what its method needs and creates its S3 client before the *baseline* RSS is taken; the copy then runs and
the process's peak RSS (``ru_maxrss``) is read. The tables show seconds, MB/s (10^6 bytes/s), peak RSS and
peak RSS above the baseline, and check the targets: the default at most 1.0x the reference's time and
64 MiB above baseline; against the rate-limited source at most 0.5x the reference's time.

    python benchmarks/bench_transfer.py                  # 1 GiB, writes benchmarks/results/transfer.md
    python benchmarks/bench_transfer.py --size 256MiB --output -
    python benchmarks/bench_transfer.py --quick          # 16 MiB smoke run, prints only
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_seedance.testing.local_airflow import free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "transfer.md"
METHODS = (
    "seedance",
    "seedance_single",
    "seedance_sha256",
    "seedance_local",
    "http_to_s3",
    "reference",
    "reference_sha256",
)
LIMITED_METHODS = ("seedance", "seedance_single", "reference")
LABELS = {
    "seedance": "SeedanceToS3Operator, default (one pass, parallel ranges)",
    "seedance_single": "SeedanceToS3Operator, download_connections=1 (one pass, one stream)",
    "seedance_sha256": "SeedanceToS3Operator, sha256_metadata=True (staging='s3')",
    "seedance_local": "SeedanceToS3Operator, sha256_metadata=True, staging='local'",
    "http_to_s3": "HttpToS3Operator (Amazon provider)",
    "reference": "httpx stream -> boto3 upload_fileobj",
    "reference_sha256": "httpx stream -> boto3 upload_fileobj, SHA-256 computed on the way",
}
OPTIONS: dict[str, dict[str, Any]] = {
    "seedance": {},
    "seedance_single": {"download_connections": 1},
    "seedance_sha256": {"sha256_metadata": True},
    "seedance_local": {"sha256_metadata": True, "staging": "local"},
}
DEFAULT_SIZE = 1024**3
QUICK_SIZE = 16 * 1024**2
DEFAULT_RATE_LIMIT = 25_000_000
MAX_RSS_ABOVE_BASELINE = 64 * 1024**2
MAX_TIME_RATIO = 1.0
MAX_LIMITED_TIME_RATIO = 0.5
BUCKET = "bench-videos"
TOKEN = "bench-token-not-a-secret"
START_TIMEOUT_SECONDS = 60.0
WORKER_TIMEOUT_SECONDS = 900.0
MiB = 1024**2


# ---------------------------------------------------------------------------------------------------------
# Worker side: one method, one process
# ---------------------------------------------------------------------------------------------------------


def rss_now() -> int:
    """Return the current resident set size of this process, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def rss_peak() -> int:
    """Return the peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


ASSEMBLY_OPERATIONS = frozenset({"CompleteMultipartUpload", "CopyObject", "UploadPartCopy"})
"""S3 calls that build the object from bytes S3 already holds: S3-side work, not the copier's."""


DATA_OPERATIONS = frozenset({"UploadPart", "PutObject"})
"""S3 calls that carry the file's bytes: the last one's end is when the copier has delivered the file."""


class S3CallTimer:
    """Sum the wall time of a boto3 S3 client's calls per operation (botocore's before/after-call events)."""

    def __init__(self, client: Any) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.data_sent_at = float("nan")
        """When the last call carrying the file's bytes (UploadPart, PutObject) returned (perf_counter)."""
        self._local = threading.local()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.*", self._before)
        client.meta.events.register("after-call.s3.*", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        self._local.started = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        elapsed = time.perf_counter() - self._local.started
        with self._lock:
            if model.name in DATA_OPERATIONS:
                self.data_sent_at = time.perf_counter()
            self.seconds[model.name] = self.seconds.get(model.name, 0.0) + elapsed
            self.calls[model.name] = self.calls.get(model.name, 0) + 1

    def assembly_seconds(self) -> float:
        """Wall time of the calls in :data:`ASSEMBLY_OPERATIONS` (run one after the other by every method)."""
        return sum(v for k, v in self.seconds.items() if k in ASSEMBLY_OPERATIONS)


class HttpxReader:
    """A minimal read-only file object over an httpx streaming response (the reference adapter)."""

    def __init__(self, response: Any, digest: Any = None) -> None:
        self._chunks = response.iter_raw()
        self._pending = b""
        self.digest = digest

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all remaining when negative)."""
        parts = [self._pending]
        have = len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if self.digest is not None:
                self.digest.update(chunk)
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]


def worker(method: str, url: str, key: str, size: int) -> dict[str, Any]:
    """
    Run one copy in this process and return its measurements.

    :param method: one of :data:`METHODS`.
    :param url: the source URL.
    :param key: the destination key in :data:`BUCKET`.
    :param size: the expected size in bytes.
    """
    copy: Any
    reported: dict[str, Any] = {}
    if method in OPTIONS:
        from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

        seedance = SeedanceToS3Operator(
            task_id="bench",
            source_urls=url,
            dest_key=f"s3://{BUCKET}/{key}",
            aws_conn_id="aws_bench",
            **OPTIONS[method],
            **json.loads(os.environ.get("BENCH_SEEDANCE_OPTIONS", "{}")),
        )
        seedance._client = (
            seedance._make_client()
        )  # the S3 client exists before the baseline, as for the others
        timer = S3CallTimer(seedance._client)

        class TI:
            def xcom_push(self, key: str, value: Any) -> None:
                reported[key] = value

        def copy() -> None:
            seedance.execute({"ti": TI()})  # type: ignore[arg-type]

    elif method == "http_to_s3":
        from airflow.providers.amazon.aws.transfers.http_to_s3 import HttpToS3Operator

        endpoint = url.split("/", 3)[3]
        amazon = HttpToS3Operator(
            task_id="bench",
            http_conn_id="http_bench",
            endpoint=endpoint,
            method="GET",
            s3_bucket=BUCKET,
            s3_key=key,
            aws_conn_id="aws_bench",
            replace=True,
        )
        timer = S3CallTimer(amazon.s3_hook.get_conn())
        amazon.http_hook.get_conn()

        def copy() -> None:
            amazon.execute({})  # type: ignore[arg-type]

    elif method in ("reference", "reference_sha256"):
        import boto3
        import httpx

        client = boto3.client("s3", endpoint_url=os.environ["BENCH_S3_ENDPOINT"], region_name="us-east-1")
        http = httpx.Client(timeout=60)
        timer = S3CallTimer(client)

        def copy() -> None:
            with http.stream("GET", url) as response:
                response.raise_for_status()
                reader = HttpxReader(response, hashlib.sha256() if method == "reference_sha256" else None)
                client.upload_fileobj(reader, BUCKET, key)
            if reader.digest is not None:
                reported["objects"] = [{"sha256": reader.digest.hexdigest()}]

    else:
        raise SystemExit(f"unknown method {method!r}")
    baseline = rss_now()
    started = time.perf_counter()
    cpu_started = time.process_time()
    copy()
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "seconds": seconds,
        "cpu": time.process_time() - cpu_started,
        "baseline": baseline,
        "peak": rss_peak(),
        "size": size,
        "assembly": timer.assembly_seconds(),
        "delivered": timer.data_sent_at - started,
        "s3_calls": {name: [timer.calls[name], round(timer.seconds[name], 2)] for name in timer.calls},
        "sha256": (reported.get("objects") or [{}])[0].get("sha256"),
    }


# ---------------------------------------------------------------------------------------------------------
# Orchestrator side: servers, workers, table
# ---------------------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """
    Parse ``1GiB``, ``256MiB``, ``64MB``, ``1048576``... into bytes.

    :param text: the size.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    powers = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4}
    base = 1000 if unit.endswith("B") and "I" not in unit and len(unit) == 2 else 1024
    return int(number * base ** powers[unit[:1] if unit else ""])


def wait_http(url: str, what: str, process: subprocess.Popen[bytes] | None) -> None:
    """Wait until ``url`` answers (any HTTP status), or fail with the process's output."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not answer at {url} within {START_TIMEOUT_SECONDS:.0f} s")


@contextlib.contextmanager
def background(cmd: list[str], what: str, health_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in the background until the block ends, once ``health_url`` answers; yield the process."""
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_http(health_url, what, process)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Row:
    """One measured method in one scenario."""

    method: str
    seconds: float
    baseline: int
    peak: int
    size: int
    assembly: float = 0.0
    cpu: float = float("nan")
    servers_cpu: float = float("nan")
    delivered: float = float("nan")
    s3_calls: dict[str, list[float]] = field(default_factory=dict)
    sha256: str | None = None
    limited: bool = False

    @property
    def mbps(self) -> float:
        """Throughput in MB/s (10^6 bytes per second)."""
        return self.size / self.seconds / 1e6

    @property
    def above(self) -> int:
        """Peak RSS above the baseline, in bytes."""
        return max(0, self.peak - self.baseline)


def cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """Return the CPU seconds (user + system) the given running processes have used so far."""
    import psutil

    total = 0.0
    for process in processes:
        times = psutil.Process(process.pid).cpu_times()
        total += times.user + times.system
    return total


def run_worker(method: str, url: str, key: str, size: int, env: dict[str, str]) -> Row:
    """Run one method in a fresh interpreter and parse its measurements."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--url", url, "--key", key]
    cmd += ["--size", str(size)]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_SECONDS, cwd=ROOT
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the {method} worker failed with code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Row(**result)


def served_sha256(size: int) -> str:
    """Return the SHA-256 of the file the emulator serves at ``/files/generated/<size>.mp4``."""
    import hashlib

    from airflow_provider_seedance.testing.media import generated_video

    body = generated_video(size)
    digest = hashlib.sha256()
    for chunk in body.iter_range(0, body.size):
        digest.update(chunk)
    return digest.hexdigest()


def check_object(client: Any, key: str, row: Row, expected_sha256: str) -> None:
    """Check the copied object's size and SHA-256 (reported and stored), delete it, check nothing is left."""
    head = client.head_object(Bucket=BUCKET, Key=key)
    if head["ContentLength"] != row.size:
        raise SystemExit(f"{row.method}: the object holds {head['ContentLength']} bytes, expected {row.size}")
    if (row.method in OPTIONS or row.method == "reference_sha256") and row.sha256 != expected_sha256:
        raise SystemExit(f"{row.method}: reported sha256 {row.sha256}, expected {expected_sha256}")
    if row.method in OPTIONS:
        stored = head.get("Metadata", {}).get("sha256")
        wanted = expected_sha256 if OPTIONS[row.method].get("sha256_metadata") else None
        if stored != wanted:
            raise SystemExit(f"{row.method}: sha256 metadata {stored!r}, expected {wanted!r}")
    client.delete_object(Bucket=BUCKET, Key=key)
    leftovers = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    if leftovers or uploads:
        raise SystemExit(f"{row.method}: left {len(leftovers)} object(s) and {len(uploads)} upload(s) behind")


def mib(value: float) -> str:
    """Format bytes as MiB."""
    return f"{value / MiB:,.1f} MiB"


def _table(rows: list[Row]) -> list[str]:
    lines = [
        "| method | seconds | MB/s | S3 assembly, s | other, s | CPU of the copier, s "
        "| CPU of the servers, s | peak RSS | baseline RSS | RSS above baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {LABELS[row.method]} | {row.seconds:.1f} | {row.mbps:.1f} | {row.assembly:.1f} | "
            f"{row.seconds - row.assembly:.1f} | {row.cpu:.1f} | {row.servers_cpu:.1f} | {mib(row.peak)} | "
            f"{mib(row.baseline)} | {mib(row.above)} |"
        )
    return lines


def render(rows: list[Row], verdicts: list[str], rate_limit: int | None = None) -> str:
    """
    Render the results tables (markdown): the unlimited source, then the rate-limited one if measured.

    :param rows: every measured row.
    :param verdicts: the target verdicts.
    :param rate_limit: the per-connection rate of the limited scenario, in bytes per second.
    """
    unlimited = [row for row in rows if not row.limited]
    limited = [row for row in rows if row.limited]
    parts = ["### Source at full speed", "", *_table(unlimited)]
    if limited:
        rate = f"{rate_limit / 1e6:.0f} MB/s" if rate_limit else "a fixed rate"
        parts += ["", f"### Source limited to {rate} per connection", "", *_table(limited)]
    calls = [
        f"- S3 calls of the fastest round, {LABELS[row.method]}"
        + (" (rate-limited source)" if row.limited else "")
        + ": "
        + ", ".join(
            f"{name} x{int(count)} ({seconds:.1f} s summed)"
            for name, (count, seconds) in row.s3_calls.items()
        )
        for row in rows
    ]
    return (
        "\n".join(parts) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\n" + "\n".join(calls) + "\n"
    )


def evaluate(rows: list[Row]) -> tuple[list[str], bool]:
    """Compare our rows with the targets; return the verdict lines and whether every target was met."""
    unlimited = {row.method: row for row in rows if not row.limited}
    limited = {row.method: row for row in rows if row.limited}
    reference = unlimited.get("reference")
    amazon = unlimited.get("http_to_s3")
    verdicts: list[str] = []
    ok = True
    for method in OPTIONS:
        ours = unlimited.get(method)
        if ours is None:
            continue
        name = LABELS[method]
        targeted = method == "seedance"  # the targets are the default's; the other rows are for comparison
        met = ours.above <= MAX_RSS_ABOVE_BASELINE
        ok &= met or not targeted
        verdicts.append(
            f"memory, {name}: {mib(ours.above)} above baseline"
            + (
                f" (target <= {mib(MAX_RSS_ABOVE_BASELINE)}): {'met' if met else 'MISSED'}"
                if targeted
                else ""
            )
        )
        if reference is not None:
            ratio = ours.seconds / reference.seconds
            met = ratio <= MAX_TIME_RATIO
            ok &= met or not targeted
            verdicts.append(
                f"time, {name}: {ratio:.2f}x the reference's"
                + (f" (target <= {MAX_TIME_RATIO}x): {'met' if met else 'MISSED'}" if targeted else "")
            )
        same_work = unlimited.get("reference_sha256")
        if same_work is not None:
            alone = f"{reference.delivered:.2f} s" if reference is not None else "not run"
            verdicts.append(
                f"time, {name}: {ours.seconds / same_work.seconds:.2f}x the reference's when the reference "
                f"also computes the SHA-256 (bytes delivered to S3 at {ours.delivered:.2f} s vs "
                f"{same_work.delivered:.2f} s; the reference alone: {alone})"
            )
        if amazon is not None:
            verdicts.append(
                f"{name} vs HttpToS3Operator: {amazon.above / max(ours.above, 1):.0f}x less memory above "
                f"baseline, {amazon.seconds / ours.seconds:.2f}x its speed"
            )
    limited_reference = limited.get("reference")
    for method in OPTIONS:
        ours = limited.get(method)
        if ours is None or limited_reference is None:
            continue
        ratio = ours.seconds / limited_reference.seconds
        targeted = method == "seedance"
        met = ratio <= MAX_LIMITED_TIME_RATIO
        ok &= met or not targeted
        verdicts.append(
            f"time against the rate-limited source, {LABELS[method]}: {ratio:.2f}x the reference's"
            + (f" (target <= {MAX_LIMITED_TIME_RATIO}x): {'met' if met else 'MISSED'}" if targeted else "")
        )
    return verdicts, ok


NOTES = """
## Reading the numbers

- All three processes (the copy, the emulator, moto_server) share the machine's cores, so the S3 side's own
  work (moto stores, concatenates and copies objects in Python) is part of every time above.
- "S3 assembly" is the wall time of the calls in which S3 builds the object from bytes it already holds
  (CompleteMultipartUpload, CopyObject, UploadPartCopy): run one after the other, they are S3's work, not
  the copier's. Under moto they cost seconds per GiB (it concatenates, checksums and rewrites the object in
  Python); "other" is everything else (download, hashing, part uploads).
- The default (one pass) uploads the parts straight to the final key, created with the metadata known up
  front: one assembly, like the reference. Its SHA-256 is computed while streaming and reported, not
  stored as metadata (S3 fixes metadata when an upload is created, before the hash is known).
- `sha256_metadata=True` stores it, at a cost: with `staging='s3'` the parts go to a staging object that S3
  then copies server side to the final key with the metadata (two assemblies: CompleteMultipartUpload +
  CopyObject); with `staging='local'` the file is spooled to local disk and uploaded after the download
  ends (one assembly, but download and upload no longer overlap).
- With a source that honours Range, the default fetches 4 ranges at once, each connection feeding its own
  parts: against a source that limits each connection's rate, the copy is no longer held to one
  connection's rate. Memory stays bounded by (connections + parts in flight) x part size.
- Every multipart upload declares the parts' checksum (CRC32) when it is created: without it S3 computes
  its default full-object CRC64NVME over the whole object at completion (under moto: seconds per GiB).
- HttpToS3Operator holds the body in memory (twice, briefly) before uploading it.
- moto's CompleteMultipartUpload time varies by a factor of two from one run to the next on the same
  machine: compare rows of the same run, and use `--repeat 3` (the table keeps each method's fastest round).
"""


def environment(size: int, load: tuple[float, float]) -> str:
    """Describe the machine and versions, for the results file."""
    import boto3
    import httpx
    import moto
    import psutil

    from airflow_provider_seedance import __version__

    return (
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- file: {size:,} bytes ({mib(size)}), generated by the emulator at /files/generated/{size}.mp4\n"
        f"- machine: {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 1024**3:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()}, airflow-provider-seedance {__version__}, httpx "
        f"{httpx.__version__}, boto3 {boto3.__version__}, moto {moto.__version__}\n- each method runs in a "
        "fresh interpreter; baseline = RSS after imports and S3 client creation, before the copy; peak = "
        "ru_maxrss of that process; with --repeat, rounds alternate the methods and the table keeps each "
        "method's fastest round and its highest memory\n- emulator and moto_server run in their own "
        "processes on 127.0.0.1 (same machine: all numbers include their CPU contention)\n- 1-minute load "
        f"average: {load[0]:.1f} before the run, {load[1]:.1f} after (other work on the machine slows every "
        "method alike)\n"
    )


def set_rate_limit(base: str, rate: int) -> None:
    """
    Set the emulator's per-connection download rate (0: unlimited) through its control endpoint.

    :param base: the emulator's base URL.
    :param rate: bytes per second per connection.
    """
    import httpx

    answer = httpx.patch(f"{base}/_emulator/settings", json={"download_rate_limit": rate}, timeout=10)
    answer.raise_for_status()


def orchestrate(args: argparse.Namespace) -> int:
    """Start the servers, run every method, print the table and write the results file."""
    import boto3

    size = args.size
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="seedance-bench-"))
    s3_port = free_port()
    s3_endpoint = f"http://127.0.0.1:{s3_port}"
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "BENCH_S3_ENDPOINT": s3_endpoint,
            "AIRFLOW_CONN_AWS_BENCH": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "bench",
                    "password": "bench",
                    "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
                }
            ),
        }
    )
    env.pop("AWS_PROFILE", None)
    os.environ.update(
        {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    )
    servers: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        if args.source_url:
            base = args.source_url.rstrip("/")
        else:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            emulator = [sys.executable, "-m", "airflow_provider_seedance.testing.cli", "--host", "127.0.0.1"]
            emulator += ["--port", str(port), "--token", TOKEN]
            servers.append(
                stack.enter_context(
                    background(emulator, "the emulator", f"{base}/_emulator/health", workdir / "emu.log")
                )
            )
        moto_cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
        servers.append(
            stack.enter_context(background(moto_cmd, "moto_server", f"{s3_endpoint}/", workdir / "moto.log"))
        )
        env["AIRFLOW_CONN_HTTP_BENCH"] = json.dumps({"conn_type": "http", "host": base})
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        url = f"{base}/files/generated/{size}.mp4"
        expected_sha256 = served_sha256(size)
        scenarios = [(False, args.methods)]
        if args.rate_limit and args.limited_methods:
            scenarios.append((True, args.limited_methods))
        rows: list[Row] = []
        for limited, methods in scenarios:
            set_rate_limit(base, args.rate_limit if limited else 0)
            what = f" at {args.rate_limit / 1e6:.0f} MB/s per connection" if limited else ""
            runs: dict[str, list[Row]] = {method: [] for method in methods}
            # Rounds go through every method in turn, so a burst of other work hits them alike.
            for round_number in range(1, args.repeat + 1):
                for method in methods:
                    print(f"round {round_number}: {LABELS[method]} on {mib(size)}{what} ...", flush=True)
                    servers_before = cpu_seconds(servers)
                    if os.environ.get("BENCH_SPLIT"):
                        print("split", [round(cpu_seconds([p]), 2) for p in servers])
                    row = run_worker(method, url, f"{method}.mp4", size, env)
                    row.servers_cpu = cpu_seconds(servers) - servers_before
                    if os.environ.get("BENCH_SPLIT"):
                        print("split", [round(cpu_seconds([p]), 2) for p in servers])
                    check_object(client, f"{method}.mp4", row, expected_sha256)
                    runs[method].append(row)
                    print(
                        f"  {row.seconds:.1f} s (bytes delivered at {row.delivered:.2f} s), "
                        f"{row.mbps:.1f} MB/s, CPU {row.cpu:.1f} s "
                        f"(servers {row.servers_cpu:.1f} s), "
                        f"{mib(row.above)} above baseline; "
                        f"S3 calls (count, seconds): {row.s3_calls}",
                        flush=True,
                    )
            # The fastest round is the one least disturbed; memory is the worst round's.
            for method, measured in runs.items():
                best = min(measured, key=lambda r: r.seconds)
                worst = max(measured, key=lambda r: r.above)
                rows.append(
                    Row(
                        method,
                        best.seconds,
                        worst.baseline,
                        worst.peak,
                        size,
                        assembly=best.assembly,
                        cpu=best.cpu,
                        servers_cpu=best.servers_cpu,
                        delivered=min(r.delivered for r in measured),
                        s3_calls=best.s3_calls,
                        sha256=best.sha256,
                        limited=limited,
                    )
                )
        set_rate_limit(base, 0)
    verdicts, ok = evaluate(rows)
    table = render(rows, verdicts, args.rate_limit)
    print()
    print(table)
    if args.output != "-":
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/bench_transfer.py" + (
            f" --size {args.size_text}" if args.size_text else ""
        )
        if args.repeat > 1:
            command += f" --repeat {args.repeat}"
        if args.rate_limit != DEFAULT_RATE_LIMIT:
            command += f" --rate-limit {args.rate_limit}"
        output.write_text(
            "# Transfer benchmark: Seedance video -> S3\n\n"
            f"Produced by `{command}` (see `benchmarks/bench_transfer.py`).\n\n"
            + table
            + "\n## Environment\n\n"
            + environment(size, (load_before, os.getloadavg()[0]))
            + NOTES
        )
        print(f"wrote {output}")
    return 0 if ok or not args.check else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the orchestrator or one worker."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=str, default=None, help="file size, e.g. 1GiB (default), 256MiB")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 MiB unless --size, print only")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument(
        "--limited-methods",
        default=",".join(LIMITED_METHODS),
        help="methods run again against the rate-limited source ('' to skip that scenario)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=DEFAULT_RATE_LIMIT,
        help="bytes per second per connection of the limited scenario (default %(default)s; 0 skips it)",
    )
    parser.add_argument(
        "--output", default=None, help=f"results file, '-' for none (default {DEFAULT_OUTPUT})"
    )
    parser.add_argument("--source-url", default=None, help="use an emulator already running at this base URL")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over all methods; the table keeps each one's fastest"
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.key, int(args.size))))
        return 0
    args.size_text = args.size
    args.size = parse_size(args.size) if args.size else (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    if args.output is None:
        args.output = "-" if args.quick else str(DEFAULT_OUTPUT)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.limited_methods = [m.strip() for m in args.limited_methods.split(",") if m.strip()]
    unknown = (set(args.methods) | set(args.limited_methods)) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
