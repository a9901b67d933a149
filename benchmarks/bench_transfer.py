#!/usr/bin/env python3
"""Benchmark: copy one large generated video from the Seedance emulator to S3 (moto server), four ways.

Methods, each run in a fresh Python process so its peak RSS is its own:

* ``seedance``: this provider's ``SeedanceToS3Operator`` with its default ``staging="s3"`` (streamed,
  verified, staged multipart upload + server-side copy that sets the ``sha256`` metadata).
* ``seedance_local``: the same with ``staging="local"`` (spooled to an unnamed local temporary file, then
  one parallel multipart upload that carries the metadata from the start: no server-side copy).
* ``http_to_s3``: Amazon's ``HttpToS3Operator`` (``requests`` reads the whole body, then ``load_bytes``).
* ``reference``: a plain httpx stream behind a file-like adapter, fed to boto3's ``upload_fileobj``.

The emulator (``seedance-emulator``) and ``moto_server`` run as separate processes on 127.0.0.1. Each worker
imports what its method needs and creates its S3 client before the *baseline* RSS is taken; the copy then
runs and the process's peak RSS (``ru_maxrss``) is read. The table shows seconds, MB/s (10^6 bytes/s), peak
RSS and peak RSS above the baseline, and checks the targets: ours at most 64 MiB above baseline, and at
least 0.9x the reference's throughput.

    python benchmarks/bench_transfer.py                  # 1 GiB, writes benchmarks/results/transfer.md
    python benchmarks/bench_transfer.py --size 256MiB --output -
    python benchmarks/bench_transfer.py --quick          # 16 MiB smoke run, prints only
"""

from __future__ import annotations

import argparse
import contextlib
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
METHODS = ("seedance", "seedance_local", "http_to_s3", "reference")
LABELS = {
    "seedance": "SeedanceToS3Operator (this provider, staging='s3', default)",
    "seedance_local": "SeedanceToS3Operator (this provider, staging='local')",
    "http_to_s3": "HttpToS3Operator (Amazon provider)",
    "reference": "httpx stream -> boto3 upload_fileobj",
}
DEFAULT_SIZE = 1024**3
QUICK_SIZE = 16 * 1024**2
MAX_RSS_ABOVE_BASELINE = 64 * 1024**2
MIN_THROUGHPUT_RATIO = 0.9
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


class S3CallTimer:
    """Sum the wall time of a boto3 S3 client's calls per operation (botocore's before/after-call events)."""

    def __init__(self, client: Any) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.*", self._before)
        client.meta.events.register("after-call.s3.*", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        self._local.started = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        elapsed = time.perf_counter() - self._local.started
        with self._lock:
            self.seconds[model.name] = self.seconds.get(model.name, 0.0) + elapsed
            self.calls[model.name] = self.calls.get(model.name, 0) + 1

    def assembly_seconds(self) -> float:
        """Wall time of the calls in :data:`ASSEMBLY_OPERATIONS` (run one after the other by every method)."""
        return sum(v for k, v in self.seconds.items() if k in ASSEMBLY_OPERATIONS)


class HttpxReader:
    """A minimal read-only file object over an httpx streaming response (the reference adapter)."""

    def __init__(self, response: Any) -> None:
        self._chunks = response.iter_raw()
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all remaining when negative)."""
        parts = [self._pending]
        have = len(self._pending)
        while size < 0 or have < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
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
    if method in ("seedance", "seedance_local"):
        from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

        seedance = SeedanceToS3Operator(
            task_id="bench",
            source_urls=url,
            dest_key=f"s3://{BUCKET}/{key}",
            aws_conn_id="aws_bench",
            staging="local" if method == "seedance_local" else "s3",
        )
        seedance._client = (
            seedance._make_client()
        )  # the S3 client exists before the baseline, as for the others
        timer = S3CallTimer(seedance._client)

        def copy() -> None:
            seedance.execute({})  # type: ignore[arg-type]

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

    elif method == "reference":
        import boto3
        import httpx

        client = boto3.client("s3", endpoint_url=os.environ["BENCH_S3_ENDPOINT"], region_name="us-east-1")
        http = httpx.Client(timeout=60)
        timer = S3CallTimer(client)

        def copy() -> None:
            with http.stream("GET", url) as response:
                response.raise_for_status()
                client.upload_fileobj(HttpxReader(response), BUCKET, key)

    else:
        raise SystemExit(f"unknown method {method!r}")
    baseline = rss_now()
    started = time.perf_counter()
    copy()
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "seconds": seconds,
        "baseline": baseline,
        "peak": rss_peak(),
        "size": size,
        "assembly": timer.assembly_seconds(),
        "s3_calls": {name: [timer.calls[name], round(timer.seconds[name], 2)] for name in timer.calls},
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
def background(cmd: list[str], what: str, health_url: str, log: Path) -> Iterator[None]:
    """Run ``cmd`` in the background until the block ends, once ``health_url`` answers."""
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_http(health_url, what, process)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Row:
    """One measured method."""

    method: str
    seconds: float
    baseline: int
    peak: int
    size: int
    assembly: float = 0.0
    s3_calls: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mbps(self) -> float:
        """Throughput in MB/s (10^6 bytes per second)."""
        return self.size / self.seconds / 1e6

    @property
    def above(self) -> int:
        """Peak RSS above the baseline, in bytes."""
        return max(0, self.peak - self.baseline)


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


def check_object(client: Any, key: str, size: int, method: str) -> str:
    """Check the copied object's size (and our sha256 metadata), delete it, and describe it."""
    head = client.head_object(Bucket=BUCKET, Key=key)
    if head["ContentLength"] != size:
        raise SystemExit(f"{method}: the object holds {head['ContentLength']} bytes, expected {size}")
    digest = head.get("Metadata", {}).get("sha256", "")
    client.delete_object(Bucket=BUCKET, Key=key)
    leftovers = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    if leftovers or uploads:
        raise SystemExit(f"{method}: left {len(leftovers)} object(s) and {len(uploads)} upload(s) behind")
    return digest


def mib(value: float) -> str:
    """Format bytes as MiB."""
    return f"{value / MiB:,.1f} MiB"


def render(rows: list[Row], size: int, verdicts: list[str]) -> str:
    """Render the results table (markdown)."""
    lines = [
        "| method | seconds | MB/s | S3 assembly, s | other, s | peak RSS | baseline RSS | RSS above baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {LABELS[row.method]} | {row.seconds:.1f} | {row.mbps:.1f} | {row.assembly:.1f} | "
            f"{row.seconds - row.assembly:.1f} | {mib(row.peak)} | {mib(row.baseline)} | {mib(row.above)} |"
        )
    calls = [
        f"- S3 calls of the fastest round, {LABELS[row.method]}: "
        + ", ".join(
            f"{name} x{int(count)} ({seconds:.1f} s summed)"
            for name, (count, seconds) in row.s3_calls.items()
        )
        for row in rows
    ]
    return (
        "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\n" + "\n".join(calls) + "\n"
    )


def evaluate(rows: list[Row]) -> tuple[list[str], bool]:
    """Compare each of our rows with the targets; return the verdict lines and whether every target was met."""
    by_method = {row.method: row for row in rows}
    reference = by_method.get("reference")
    amazon = by_method.get("http_to_s3")
    verdicts: list[str] = []
    ok = True
    for method in ("seedance", "seedance_local"):
        ours = by_method.get(method)
        if ours is None:
            continue
        name = f"ours ({'staging=local' if method == 'seedance_local' else 'staging=s3, default'})"
        met = ours.above <= MAX_RSS_ABOVE_BASELINE
        ok &= met
        verdicts.append(
            f"memory, {name}: {mib(ours.above)} above baseline (target <= {mib(MAX_RSS_ABOVE_BASELINE)}): "
            f"{'met' if met else 'MISSED'}"
        )
        if reference is not None:
            ratio = ours.mbps / reference.mbps
            met = ratio >= MIN_THROUGHPUT_RATIO
            ok &= met
            verdicts.append(
                f"throughput, {name}: {ratio:.2f}x the reference (target >= {MIN_THROUGHPUT_RATIO}x): "
                f"{'met' if met else 'MISSED'}"
            )
            ours_other = ours.seconds - ours.assembly
            reference_other = reference.seconds - reference.assembly
            if ours_other > 0 and reference_other > 0:
                verdicts.append(
                    f"{name}, time outside S3 assembly: {ours_other:.1f} s vs the reference's "
                    f"{reference_other:.1f} s ({reference_other / ours_other:.2f}x its speed)"
                )
        if amazon is not None:
            verdicts.append(
                f"{name} vs HttpToS3Operator: {amazon.above / max(ours.above, 1):.0f}x less memory above "
                f"baseline, {ours.mbps / amazon.mbps:.2f}x its throughput"
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
- `staging='s3'` (the default) uploads the parts to a staging object, then has S3 copy it server side to
  the final key with the `sha256` metadata (S3 fixes metadata when an upload is created, and the SHA-256 is
  known only at the end): two S3 assemblies (CompleteMultipartUpload + CopyObject) where the reference
  has one. That second assembly is the gap to the reference.
- `staging='local'` spools the file to an unnamed temporary file instead, then uploads it once with the
  metadata set from the start: one assembly like the reference, but the download and the upload run one
  after the other instead of overlapping. It needs free disk space for the video (not a tmpfs).
- Either way one extra pass over the bytes is the price of exact `sha256` metadata without downloading
  twice; the reference overlaps one download with one upload, verifies nothing and sets no metadata.
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
        f"- Python {platform.python_version()}, airflow-provider-seedance {__version__}, httpx {httpx.__version__}, "
        f"boto3 {boto3.__version__}, moto {moto.__version__}\n"
        "- each method runs in a fresh interpreter; baseline = RSS after imports and S3 client creation, "
        "before the copy; peak = ru_maxrss of that process; with --repeat, rounds alternate the methods "
        "and the table keeps each method's fastest round and its highest memory\n"
        "- emulator and moto_server run in their own processes on 127.0.0.1 (same machine: all numbers "
        "include their CPU contention)\n"
        f"- 1-minute load average: {load[0]:.1f} before the run, {load[1]:.1f} after (other work on the machine "
        "slows every method alike)\n"
    )


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
    with contextlib.ExitStack() as stack:
        if args.source_url:
            base = args.source_url.rstrip("/")
        else:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            emulator = [sys.executable, "-m", "airflow_provider_seedance.testing.cli", "--host", "127.0.0.1"]
            emulator += ["--port", str(port), "--token", TOKEN]
            stack.enter_context(
                background(emulator, "the emulator", f"{base}/_emulator/health", workdir / "emu.log")
            )
        moto_cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
        stack.enter_context(background(moto_cmd, "moto_server", f"{s3_endpoint}/", workdir / "moto.log"))
        env["AIRFLOW_CONN_HTTP_BENCH"] = json.dumps({"conn_type": "http", "host": base})
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        url = f"{base}/files/generated/{size}.mp4"
        rows: list[Row] = []
        runs: dict[str, list[Row]] = {method: [] for method in args.methods}
        # Rounds go through every method in turn, so a burst of other work on the machine hits them alike.
        for round_number in range(1, args.repeat + 1):
            for method in args.methods:
                print(f"round {round_number}: {LABELS[method]} on {mib(size)} ...", flush=True)
                row = run_worker(method, url, f"{method}.mp4", size, env)
                digest = check_object(client, f"{method}.mp4", size, method)
                if method.startswith("seedance") and len(digest) != 64:
                    raise SystemExit(f"{method}: the object has no sha256 metadata")
                runs[method].append(row)
                print(
                    f"  {row.seconds:.1f} s, {row.mbps:.1f} MB/s, {mib(row.above)} above baseline; "
                    f"S3 calls (count, seconds): {row.s3_calls}",
                    flush=True,
                )
        # The fastest round is the one least disturbed; memory is the worst round's.
        for method, measured in runs.items():
            best = min(measured, key=lambda r: r.seconds)
            worst = max(measured, key=lambda r: r.above)
            rows.append(
                Row(method, best.seconds, worst.baseline, worst.peak, size, best.assembly, best.s3_calls)
            )
    verdicts, ok = evaluate(rows)
    table = render(rows, size, verdicts)
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
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
