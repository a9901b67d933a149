#!/usr/bin/env python3
"""Benchmark: N concurrent Seedance triggers in one event loop (fan-in), ours vs a naive trigger.

Three processes per variant, so each one's CPU is its own:

* the **emulator** (this script with ``--serve-emulator``): the provider's RunComfy API emulator
  (``airflow_provider_seedance.testing``: same FastAPI app, uvicorn settings as ``seedance-emulator``) behind
  a thin counting layer that records, per request id, the status and result GETs, the first status GET, and
  every distinct client ``(host, port)`` (= TCP connection). It creates the N jobs on request, each with its
  own finish time drawn uniformly from ``--finish`` seconds (seeded), so polling runs in steady state;
* the **trigger process** (``--worker``): imports Airflow and the provider, builds N triggers and runs them
  the way Airflow's triggerer does (``asyncio.run``, one task per trigger iterating ``trigger.run()`` until
  the first event, behind a greenback portal), plus a 10 ms ticker task that measures event-loop lag
  (oversleep). It reads the connection with ``BaseHook.aget_connection`` from
  ``AIRFLOW_CONN_SEEDANCE_DEFAULT`` (JSON), as a triggerer falls back to env/secrets backends. TCP connects
  are counted by wrapping httpcore's ``AnyIOBackend.connect_tcp``;
* the **orchestrator** (this script): starts both, samples the trigger process's open TCP connections to
  the emulator (psutil, from outside, so the sampling costs the trigger process nothing), and prints the
  table.

Variants, same N, poll interval, plan and deadline:

* ``ours``: :class:`~airflow_provider_seedance.triggers.seedance.SeedanceRequestTrigger` (shared
  ``httpx.AsyncClient`` per event loop, one status GET per poll, the result GET once the run is over);
* ``naive``: the common anti-pattern, written below: a new ``httpx.AsyncClient`` for every poll, and a
  status GET *and* a result GET on every poll. It reads its connection once, like ours.

``--start spread`` (default) starts trigger *i* at *i*/N of a poll interval, as when tasks defer over time;
``--start burst`` starts them all at once, as after a triggerer restart (or a mapped fan-out deferring in the
same second).

``--protocols http,https`` runs every N over plain HTTP and over HTTPS. For HTTPS the orchestrator makes a
throwaway CA and a loopback server certificate
(:func:`~airflow_provider_seedance.testing.tls.make_local_certificates`); the emulator serves TLS with it and
both triggers trust it through the connection's ``ca_bundle`` extra, as a deployment behind a private CA
does (nothing is trusted through ``SSL_CERT_FILE``, which would bypass the setting under test). The bundle
is the one such deployments use: the public roots (certifi's) plus the private CA, what
``update-ca-certificates`` produces and what docs/connection.md recommends. The naive trigger builds its SSL
context from that bundle for each client, as ``httpx.AsyncClient(verify=...)`` does. Each trigger's deadline
is its job's finish + 60 s; the orchestrator stops the trigger process (SIGTERM: it writes what it measured so
far) 30 s after the last deadline, so a variant that cannot keep up is reported, not waited for.

    python benchmarks/bench_triggers.py                    # N=1,000 and 10,000, poll 5 s (~9 min)
    python benchmarks/bench_triggers.py --n 10000 --poll 30 --finish 30:90 --variants ours
    python benchmarks/bench_triggers.py --quick            # N=40, poll 1 s, jobs of 2-4 s, prints only
    python benchmarks/bench_triggers.py --n 1000 --protocols http,https   # the keep-alive targets (~6 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    MiB,
    finish_notes,
    fmt,
    free_port,
    loadavg,
    machine_notes,
    median,
    notes_block,
    percentile,
    side_by_side,
    verdict,
    worker_env,
    write_result,
)

TOKEN = "bench-token-not-a-secret-0123456789"
VARIANTS = ("ours", "naive")
LABELS = {"ours": "SeedanceRequestTrigger (ours)", "naive": "naive trigger"}
TICK_SECONDS = 0.010
NOISE_FLOOR_SECONDS = 5.0
"""The ticker runs alone this long before the triggers start: the lag the machine itself causes."""

DEADLINE_GRACE_SECONDS = 60.0
"""Each trigger's ``end_time`` is this long after its job's planned finish: a ``timeout`` event is a bug."""

CONNECTION_SAMPLE_SECONDS = 1.0
START_TIMEOUT_SECONDS = 120.0
TARGETS = {
    "lag_p99_ms": 50.0,
    "gets_per_poll": 1.0,
    "tcp_connections": 20,
    "detection_margin_s": 1.0,
}
CPU_RATIO_TARGETS = {"http": 0.5, "https": 0.25}
"""CPU per poll of ours over the naive trigger's: over HTTPS the naive one pays a handshake per poll."""

PROTOCOLS = ("http", "https")
_CONTROL_CA: str | None = None
"""The benchmark CA (HTTPS runs): trusted explicitly by the control calls, never through the environment."""


BUNDLE_NAME = "bundle.pem"
"""The connection's CA bundle in HTTPS runs: certifi's public roots plus the benchmark CA."""


def write_bundle(tls_dir: Path) -> Path:
    """
    Write the CA bundle of a deployment behind a private CA: the public roots, then the private CA.

    :param tls_dir: the directory holding the benchmark CA's ``ca.pem``.
    """
    import certifi

    bundle = tls_dir / BUNDLE_NAME
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + (tls_dir / "ca.pem").read_bytes())
    return bundle


def _control_verify() -> ssl.SSLContext | bool:
    """What the orchestrator's and the trigger process's control calls verify the emulator with."""
    return ssl.create_default_context(cafile=_CONTROL_CA) if _CONTROL_CA else True


_REQUEST_PATH = re.compile(r"^/v1/requests/([^/]+)/(status|result)$")


# ---------------------------------------------------------------------------------------------------------
# Emulator process: the provider's emulator behind a counting layer
# ---------------------------------------------------------------------------------------------------------


class CountingApp:
    """
    ASGI wrapper around the emulator app: counts GETs per request id and distinct client connections, and
    serves ``/_bench/*`` (create jobs, read counters) for the orchestrator and the trigger process.

    :param app: the emulator's ASGI app.
    :param state: the emulator's state (jobs are created directly in it).
    """

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state
        self.status: dict[str, int] = {}
        self.result: dict[str, int] = {}
        self.first_status: dict[str, float] = {}
        self.clients: set[tuple[str, int]] = set()
        self.jobs_created_at: float | None = None
        self.cpu_at_jobs = 0.0
        self.requests_at_jobs = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/_bench/"):
                await self._control(scope, send)
                return
            client = scope.get("client")
            if client:
                self.clients.add((client[0], client[1]))
            match = _REQUEST_PATH.match(path)
            if match:
                rid, endpoint = match.groups()
                if endpoint == "status":
                    self.status[rid] = self.status.get(rid, 0) + 1
                    self.first_status.setdefault(rid, time.time())
                else:
                    self.result[rid] = self.result.get(rid, 0) + 1
        await self.app(scope, receive, send)

    async def _control(self, scope: dict[str, Any], send: Any) -> None:
        query = dict(parse_qsl(scope["query_string"].decode()))
        path = scope["path"]
        if path == "/_bench/jobs":
            body: Any = {"jobs": self._create_jobs(int(query["n"]), *map(float, query["finish"].split(":")))}
            body["seed"] = query.get("seed")
        elif path == "/_bench/stats":
            body = self._stats()
        elif path == "/_bench/started":
            body = {"jobs_created_at": self.jobs_created_at}
        else:
            body = {"ok": True}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _create_jobs(self, n: int, low: float, high: float) -> list[tuple[str, float]]:
        from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
        from airflow_provider_seedance.testing import JobPlan

        rng = random.Random(int(os.environ.get("BENCH_SEED", "7")))
        body = {
            "prompt": "A paper boat on a rainy street",
            "first_frame_image_url": "https://example.com/f.png",
        }
        jobs = []
        for _ in range(n):
            total = rng.uniform(low, high)
            queue = min(5.0, total / 4)
            self.state.plan_next(JobPlan(queue_seconds=queue, run_seconds=total - queue))
            job = self.state.submit(SEEDANCE_1_5_PRO_I2V_MODEL_ID, body, TOKEN)
            jobs.append((job.request_id, job.created_at + total))
        self.jobs_created_at = time.time()
        self.cpu_at_jobs = _own_cpu()
        self.requests_at_jobs = self.state.count()
        return jobs

    def _stats(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "result": self.result,
            "first_status": self.first_status,
            "clients": len(self.clients),
            "requests": self.state.count() - self.requests_at_jobs,
            "cpu": _own_cpu() - self.cpu_at_jobs,
            "jobs_created_at": self.jobs_created_at,
        }


def _own_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_emulator(port: int, tls_dir: str | None = None) -> None:
    """
    Serve the emulator (uvicorn, the emulator's own settings) on 127.0.0.1:``port`` until SIGTERM.

    :param port: the port.
    :param tls_dir: serve HTTPS with the certificates made there by ``make_local_certificates``.
    """
    import uvicorn

    from airflow_provider_seedance.testing import EmulatorState, create_app
    from airflow_provider_seedance.testing.server import DEFAULT_BACKLOG, DEFAULT_KEEP_ALIVE_SECONDS

    # A short request log: the counters above are exact, and 10,000 pollers would fill 100,000 entries.
    state = EmulatorState(TOKEN, max_log_entries=1000)
    app = CountingApp(create_app(state), state)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=DEFAULT_BACKLOG,
        timeout_keep_alive=DEFAULT_KEEP_ALIVE_SECONDS,
        server_header=False,
        ssl_certfile=str(Path(tls_dir) / "server.pem") if tls_dir else None,
        ssl_keyfile=str(Path(tls_dir) / "server-key.pem") if tls_dir else None,
    )
    uvicorn.Server(config).run()


# ---------------------------------------------------------------------------------------------------------
# Trigger process
# ---------------------------------------------------------------------------------------------------------


def naive_trigger_class() -> type:
    """Build the naive trigger class (Airflow is imported only in the trigger process)."""
    import httpx
    from airflow.sdk import BaseHook
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    class NaiveSeedanceTrigger(BaseTrigger):
        """
        The anti-pattern: a new HTTP client every poll, and both status and result read on every poll.

        :param request_id: the request to wait for.
        :param poll_interval: seconds between polls.
        :param end_time: deadline, epoch seconds.
        """

        def __init__(self, request_id: str, poll_interval: float, end_time: float) -> None:
            super().__init__()
            self.request_id = request_id
            self.poll_interval = poll_interval
            self.end_time = end_time

        def serialize(self) -> tuple[str, dict[str, Any]]:
            return (
                "bench_triggers.NaiveSeedanceTrigger",
                {
                    "request_id": self.request_id,
                    "poll_interval": self.poll_interval,
                    "end_time": self.end_time,
                },
            )

        async def run(self) -> Any:
            conn = await BaseHook.aget_connection("seedance_default")
            headers = {"Authorization": f"Bearer {conn.password}"}
            base_url = str(conn.host)
            ca_bundle = conn.extra_dejson.get("ca_bundle")
            rid = self.request_id
            while True:
                try:
                    # What `verify=<path>` does inside httpx, without its deprecation warning.
                    verify = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
                    async with httpx.AsyncClient(
                        base_url=base_url, headers=headers, timeout=30, verify=verify
                    ) as client:
                        await client.get(f"/v1/requests/{rid}/status")
                        result = (await client.get(f"/v1/requests/{rid}/result")).json()
                except httpx.HTTPError as exc:
                    self.log.warning("poll failed: %s", exc)
                    result = {}
                status = result.get("status")
                if status in ("succeeded", "completed", "failed", "cancelled"):
                    yield TriggerEvent(
                        {
                            "status": "succeeded" if status in ("succeeded", "completed") else status,
                            "request_id": rid,
                        }
                    )
                    return
                if time.time() >= self.end_time:
                    yield TriggerEvent({"status": "timeout", "request_id": rid})
                    return
                await asyncio.sleep(self.poll_interval)

    return NaiveSeedanceTrigger


def _count_connects() -> list[int]:
    """Wrap httpcore's asyncio backend so every TCP connect made by any httpx client is counted."""
    from httpcore._backends import anyio as anyio_backend

    counter = [0]
    original = anyio_backend.AnyIOBackend.connect_tcp

    async def connect_tcp(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await original(self, *args, **kwargs)

    anyio_backend.AnyIOBackend.connect_tcp = connect_tcp  # type: ignore[method-assign]
    return counter


class LagTicker:
    """A task that sleeps 10 ms at a time and records how much longer each sleep took (event-loop lag)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.stopped = False
        self.last_tick = time.monotonic()

    async def run(self) -> None:
        """Tick until :attr:`stopped` is set; each sample is (wall time, lag in seconds)."""
        loop = asyncio.get_running_loop()
        while not self.stopped:
            before = loop.time()
            await asyncio.sleep(TICK_SECONDS)
            self.last_tick = time.monotonic()
            self.samples.append((time.time(), loop.time() - before - TICK_SECONDS))


class StallSampler(threading.Thread):
    """
    While the ticker has not ticked for over a second (a stalled event loop), sample the main thread's
    stack every 250 ms, so a report can say what the loop was busy with.

    :param ticker: the lag ticker whose heartbeat is watched.
    """

    STALL_SECONDS = 1.0
    EVERY_SECONDS = 0.25

    def __init__(self, ticker: LagTicker) -> None:
        super().__init__(daemon=True)
        self.ticker = ticker
        self.main = threading.main_thread().ident
        self.where: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import traceback

        while not self._halt.wait(self.EVERY_SECONDS):
            if time.monotonic() - self.ticker.last_tick < self.STALL_SECONDS or self.main is None:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[::-1]
            key = " <- ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in stack[:5])
            self.where[key] = self.where.get(key, 0) + 1
            self.samples += 1

    def top(self, count: int = 5) -> list[tuple[str, int]]:
        """
        The most sampled stacks while stalled.

        :param count: how many.
        """
        return sorted(self.where.items(), key=lambda item: -item[1])[:count]

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()


async def _noise_floor() -> list[float]:
    """Run the ticker alone for a few seconds: the lag this machine causes by itself, right before the run."""
    ticker = LagTicker()
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(NOISE_FLOOR_SECONDS)
    ticker.stopped = True
    await task
    return [lag for _, lag in ticker.samples]


class WorkerRun:
    """
    Everything the trigger process measures, kept in one place so a SIGTERM (the orchestrator's time limit)
    can still write what was measured so far.

    :param variant: ``ours`` or ``naive``.
    :param n: the number of triggers.
    :param poll: the poll interval.
    :param out: the JSON file to write.
    """

    def __init__(self, variant: str, n: int, poll: float, out: Path) -> None:
        self.variant = variant
        self.n = n
        self.poll = poll
        self.out = out
        self.connects = _count_connects()
        self.floor: list[float] = []
        self.jobs: list[tuple[str, float]] = []
        self.ticker = LagTicker()
        self.stalls = StallSampler(self.ticker)
        self.events: dict[str, tuple[float, str]] = {}
        self.errors: list[str] = []
        self.error_count = 0
        self.rss_baseline = 0
        self.started = math.nan
        self.cpu_started = math.nan
        self.written = False
        self.profiler: Any = None

    async def run_triggers(self, triggers: Sequence[Any], start: str, use_greenback: bool) -> None:
        """
        Run every trigger until its first event (as the triggerer does), with the lag ticker running.

        :param triggers: the triggers, in job order.
        :param start: ``burst`` (all start at once) or ``spread`` (start times spread over one poll interval).
        :param use_greenback: enter a greenback portal in each trigger task, as the triggerer does.
        """
        tick = asyncio.create_task(self.ticker.run())
        self.stalls.start()

        async def one(trigger: Any, delay: float) -> None:
            if delay:
                await asyncio.sleep(delay)
            if use_greenback:
                import greenback

                await greenback.ensure_portal()
            stream = trigger.run()
            try:
                event = await stream.__anext__()
                self.events[trigger.request_id] = (time.time(), str(event.payload.get("status")))
            except Exception as exc:
                self.error_count += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                await stream.aclose()

        self.started = time.time()
        self.cpu_started = time.process_time()
        step = self.poll / len(triggers) if start == "spread" else 0.0
        tasks = [asyncio.create_task(one(t, i * step)) for i, t in enumerate(triggers)]
        await asyncio.gather(*tasks)
        self.ticker.stopped = True
        await tick
        from airflow_provider_seedance.hooks.seedance import aclose_shared_clients

        await aclose_shared_clients()

    def write(self, killed: bool) -> None:
        """
        Write the raw measurements (the orchestrator adds the emulator's counters).

        :param killed: whether the run was cut short by the orchestrator's time limit.
        """
        if self.written:
            return
        self.written = True
        self.stalls.stop()
        profile: dict[str, float] | None = None
        if self.profiler is not None:
            self.profiler.disable()
            profile = _profile_groups(self.profiler)
        self.out.write_text(
            json.dumps(
                {
                    "variant": self.variant,
                    "n": self.n,
                    "poll": self.poll,
                    "killed": killed,
                    "wall": time.time() - self.started,
                    "cpu_run": time.process_time() - self.cpu_started,
                    "rss_baseline": self.rss_baseline,
                    "rss_peak": _peak_rss(),
                    "events": self.events,
                    "error_count": self.error_count,
                    "errors": self.errors,
                    "connects": self.connects[0],
                    "lags": self.ticker.samples,
                    "lag_floor": self.floor,
                    "started": self.started,
                    "jobs": self.jobs,
                    "profile": profile,
                    "stall_samples": self.stalls.samples,
                    "stalls": self.stalls.top(),
                }
            )
        )


def worker(
    variant: str, url: str, n: int, poll: float, finish: str, start: str, out: Path, profile: bool = False
) -> None:
    """
    The trigger process: create the jobs, run N triggers of ``variant``, write the measurements to ``out``.

    :param variant: ``ours`` or ``naive``.
    :param url: the emulator's base URL.
    :param n: how many triggers (and jobs).
    :param poll: the poll interval, seconds.
    :param finish: ``low:high`` seconds, the range of the jobs' finish times.
    :param start: ``spread`` or ``burst``.
    :param out: the JSON file to write.
    :param profile: run the triggers under cProfile and report CPU by package.
    """
    import httpx
    import psutil

    run = WorkerRun(variant, n, poll, out)
    from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger

    naive_cls = naive_trigger_class()
    use_greenback = os.environ.get("AIRFLOW_DISABLE_GREENBACK_PORTAL", "").lower() != "true"

    def on_term(signum: int, frame: Any) -> None:
        run.write(killed=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    run.floor = asyncio.run(_noise_floor())
    # A one-shot control call (no keep-alive connection left open to be counted during the run).
    answer = httpx.post(
        f"{url}/_bench/jobs", params={"n": n, "finish": finish}, timeout=120, verify=_control_verify()
    ).json()
    run.jobs = [(rid, done) for rid, done in answer["jobs"]]
    gc.collect()
    run.rss_baseline = psutil.Process().memory_info().rss
    if variant == "ours":
        triggers = [
            SeedanceRequestTrigger(rid, poll_interval=poll, end_time=done + DEADLINE_GRACE_SECONDS)
            for rid, done in run.jobs
        ]
    else:
        triggers = [naive_cls(rid, poll, done + DEADLINE_GRACE_SECONDS) for rid, done in run.jobs]
    if profile:
        import cProfile

        run.profiler = cProfile.Profile()
        run.profiler.enable()
    asyncio.run(run.run_triggers(triggers, start, use_greenback))
    run.write(killed=False)


IDLE_GROUP = "idle: waiting in epoll (not CPU)"

PROFILE_GROUPS = (
    (IDLE_GROUP, ("select.epoll",)),
    ("ssl (a new SSL context per client: CA bundle load)", ("ssl", "certifi")),
    ("this provider", ("airflow_provider_seedance",)),
    ("httpx", ("/httpx/",)),
    ("httpcore", ("/httpcore/",)),
    ("anyio + sniffio", ("/anyio/", "/sniffio/")),
    ("h11 (HTTP/1.1 parser)", ("/h11/",)),
    ("asyncio + selectors + socket", ("/asyncio/", "selectors.py", "socket.py", "_socket")),
    ("greenback", ("/greenback/", "/outcome/", "greenlet")),
    ("logging (structlog, logging)", ("/structlog/", "/logging/")),
    ("tenacity", ("/tenacity/",)),
    ("pydantic", ("/pydantic", "pydantic_core")),
    ("airflow", ("/airflow/",)),
    ("json, re, urllib", ("/json/", "/re/", "re.py", "urllib", "'re'", "sre")),
)
"""How the profile is summed up: first matching group wins; the rest is 'other (builtins, stdlib)'."""


def _profile_groups(profiler: Any) -> dict[str, float]:
    """
    Sum a cProfile's own time (``tottime``) by package.

    :param profiler: a disabled ``cProfile.Profile``.
    """
    import pstats

    groups: dict[str, float] = {}
    stats = pstats.Stats(profiler).stats.items()  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats:
        where = f"{filename} {name}"
        label = next(
            (group for group, patterns in PROFILE_GROUPS if any(p in where for p in patterns)),
            "other (builtins, stdlib)",
        )
        groups[label] = groups.get(label, 0.0) + tottime
    return groups


def _peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


# ---------------------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator_process(log: Path, tls_dir: Path | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """
    Start the counting emulator in its own process; yield its URL and process; stop it on exit.

    :param log: where its output goes.
    :param tls_dir: serve HTTPS with the benchmark CA's server certificate from there.
    """
    import httpx

    port = free_port()
    env = worker_env(log.parent / "emulator-home")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, __file__, "--serve-emulator", "--port", str(port)]
            + (["--tls-dir", str(tls_dir)] if tls_dir else []),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    url = f"{'https' if tls_dir else 'http'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the emulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_bench/health", timeout=2, verify=_control_verify()).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the emulator did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Monitor(threading.Thread):
    """
    Watch the trigger process from outside: its open TCP connections to the emulator (psutil, so sampling
    costs the trigger process nothing) and the time limit, counted from the moment the jobs were created.

    :param proc: the trigger process.
    :param url: the emulator's base URL.
    :param limit: seconds the run may take after the jobs were created before the process is stopped.
    """

    def __init__(self, proc: subprocess.Popen[bytes], url: str, limit: float) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.limit = limit
        self.max_open = 0
        self.killed = False
        self._halt = threading.Event()

    def run(self) -> None:
        import httpx
        import psutil

        try:
            process = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        deadline: float | None = None
        pause = CONNECTION_SAMPLE_SECONDS
        while not self._halt.wait(pause):
            if deadline is None:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = httpx.get(f"{self.url}/_bench/started", timeout=5, verify=_control_verify())
                    created = answer.json()["jobs_created_at"]
                    if created is not None:
                        deadline = created + self.limit
            elif time.time() > deadline and self.proc.poll() is None:
                self.killed = True
                self.proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            try:
                conns = process.net_connections(kind="tcp")
            except psutil.Error:
                return
            # Reading the socket table gets slow with many sockets in TIME_WAIT: keep this thread light.
            pause = max(CONNECTION_SAMPLE_SECONDS, 5 * (time.monotonic() - began))
            open_now = sum(
                1 for c in conns if c.raddr and c.raddr.port == self.port and c.status == "ESTABLISHED"
            )
            self.max_open = max(self.max_open, open_now)

    def stop(self) -> None:
        """Stop watching."""
        self._halt.set()
        self.join(10)


def run_variant(
    variant: str,
    n: int,
    poll: float,
    finish: tuple[float, float],
    start: str,
    tmp: Path,
    profile: bool = False,
    tls_dir: Path | None = None,
) -> dict[str, Any]:
    """
    Run one variant against a fresh emulator; return the measurements of both processes.

    :param variant: ``ours`` or ``naive``.
    :param n: the number of triggers.
    :param poll: the poll interval.
    :param finish: the range of job finish times, seconds.
    :param start: ``spread`` or ``burst``.
    :param tmp: a scratch directory.
    :param profile: run the trigger process under cProfile.
    :param tls_dir: run over HTTPS with the benchmark CA from there (``None``: plain HTTP).
    """
    import httpx

    run_dir = tmp / f"{variant}-{n}-{start}-{'https' if tls_dir else 'http'}"
    run_dir.mkdir()
    out = run_dir / "result.json"
    with emulator_process(run_dir / "emulator.log", tls_dir) as (url, _emulator):
        fields: dict[str, Any] = {"conn_type": "seedance", "host": url, "password": TOKEN}
        if tls_dir is not None:
            fields["extra"] = {"ca_bundle": str(tls_dir / BUNDLE_NAME)}
        conn = json.dumps(fields)
        home = run_dir / "airflow-home"
        home.mkdir()
        env = worker_env(home, {"AIRFLOW_CONN_SEEDANCE_DEFAULT": conn})
        started = time.monotonic()
        load_before = loadavg()
        command = [
            PYTHON, __file__, "--worker", variant, "--url", url, "--n", str(n), "--poll", str(poll),
            "--finish", f"{finish[0]}:{finish[1]}", "--start", start, "--out", str(out),
        ] + (["--profile"] if profile else []) + (["--tls-dir", str(tls_dir)] if tls_dir else [])  # fmt: skip
        with (run_dir / "worker.log").open("wb") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir)
        monitor = Monitor(proc, url, run_limit(finish))
        monitor.start()
        try:
            code = proc.wait(timeout=START_TIMEOUT_SECONDS + NOISE_FLOOR_SECONDS + run_limit(finish) + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        monitor.stop()
        if code != 0 or not out.exists():
            tail = (run_dir / "worker.log").read_text(errors="replace")[-4000:]
            return {"variant": variant, "n": n, "poll": poll, "failed": f"exit code {code}", "log_tail": tail}
        data: dict[str, Any] = json.loads(out.read_text())
        data["emulator"] = httpx.get(f"{url}/_bench/stats", timeout=120, verify=_control_verify()).json()
    data["max_open"] = monitor.max_open
    data["elapsed"] = time.monotonic() - started
    data["load"] = f"{load_before} -> {loadavg()}"
    note = " (stopped at the time limit)" if data["killed"] else ""
    print(f"  {variant:5} N={n:>6}: done in {data['elapsed']:.0f} s{note} (load {data['load']})", flush=True)
    return data


def run_limit(finish: tuple[float, float]) -> float:
    """
    Seconds a run may last after its jobs were created: every trigger's deadline plus a margin.

    :param finish: the range of job finish times.
    """
    return finish[1] + DEADLINE_GRACE_SECONDS + 30


def _ms(values: Sequence[float], pct: float) -> float:
    return percentile(values, pct) * 1000


def metrics(data: dict[str, Any]) -> dict[str, float]:
    """
    Reduce one variant's raw measurements to the table's figures.

    :param data: the trigger process's report, with the emulator's counters under ``emulator``.
    """
    emulator = data["emulator"]
    n = data["n"]
    jobs = dict(data["jobs"])
    status_gets = [emulator["status"].get(rid, 0) for rid in jobs]
    result_gets = [emulator["result"].get(rid, 0) for rid in jobs]
    total_gets = sum(status_gets) + sum(result_gets)
    polls = sum(status_gets)
    events = data["events"]
    succeeded = sum(1 for _, status in events.values() if status == "succeeded")
    latencies = [at - jobs[rid] for rid, (at, status) in events.items() if status == "succeeded"]
    first = emulator["first_status"]
    all_polled = max(first.values()) if len(first) == n else math.nan
    lags = [lag for _, lag in data["lags"]]
    steady = [lag for at, lag in data["lags"] if at >= all_polled]
    wall, cpu = data["wall"], data["cpu_run"]
    return {
        "succeeded": succeeded,
        "other": n - succeeded,
        "killed": data["wall"] if data["killed"] else math.nan,
        "wall": wall,
        "cpu": cpu,
        "cpu_pct": 100 * cpu / wall if wall else math.nan,
        "cpu_per_poll": 1000 * cpu / polls if polls else math.nan,
        "cpu_per_get": 1000 * cpu / total_gets if total_gets else math.nan,
        "rss_peak": data["rss_peak"] / MiB,
        "rss_above": (data["rss_peak"] - data["rss_baseline"]) / MiB,
        "rss_per_trigger_kib": (data["rss_peak"] - data["rss_baseline"]) / 1024 / n,
        "polled": len(first),
        "gets_per_job": total_gets / n,
        "gets_per_job_max": max((s + r for s, r in zip(status_gets, result_gets, strict=True)), default=0),
        "polls_per_job": polls / n,
        "gets_per_poll": total_gets / polls if polls else math.nan,
        "gets_per_poll_excl": (total_gets - sum(1 for r in result_gets if r)) / polls if polls else math.nan,
        "connects": data["connects"],
        "server_clients": emulator["clients"],
        "max_open": data["max_open"],
        "lag_floor_p99": _ms(data["lag_floor"], 99),
        "lag_p99": _ms(lags, 99),
        "lag_steady_p99": _ms(steady, 99),
        "lag_max": max(lags, default=math.nan) * 1000,
        "startup": all_polled - data["started"],
        "latency_p50": median(latencies),
        "latency_p95": percentile(latencies, 95),
        "latency_max": max(latencies, default=math.nan),
        "emulator_cpu": emulator["cpu"],
        "emulator_pct": 100 * emulator["cpu"] / wall if wall else math.nan,
        "emulator_rps": emulator["requests"] / wall if wall else math.nan,
    }


ROWS: list[tuple[str, str, int]] = [
    ("events: succeeded", "succeeded", 0),
    ("events: other (timeout / error / none yet)", "other", 0),
    ("stopped at the time limit after, s (blank: finished)", "killed", 0),
    ("run wall time, s", "wall", 1),
    ("**CPU of the trigger process, s**", "cpu", 1),
    ("CPU, % of one core", "cpu_pct", 0),
    ("**CPU per poll (one job checked once), ms**", "cpu_per_poll", 2),
    ("CPU per GET, ms", "cpu_per_get", 2),
    ("peak RSS, MiB", "rss_peak", 0),
    ("peak RSS above the pre-trigger baseline, MiB", "rss_above", 1),
    ("  per trigger, KiB", "rss_per_trigger_kib", 1),
    ("triggers that polled at least once", "polled", 0),
    ("GETs per job (mean)", "gets_per_job", 2),
    ("GETs per job (max)", "gets_per_job_max", 0),
    ("polls per job (status GETs, mean)", "polls_per_job", 2),
    ("GETs per poll per job", "gets_per_poll", 2),
    ("**GETs per poll per job, excluding the final result GET**", "gets_per_poll_excl", 2),
    ("**TCP connections open at once (max, sampled every >= 1 s)**", "max_open", 0),
    ("TCP connections opened in total (client connects)", "connects", 0),
    ("TCP connections seen by the emulator (distinct client ports)", "server_clients", 0),
    ("event-loop lag p99, ticker alone before the run (noise floor), ms", "lag_floor_p99", 1),
    ("event-loop lag p99, whole run, ms", "lag_p99", 1),
    ("**event-loop lag p99, steady state (after every trigger's first poll), ms**", "lag_steady_p99", 1),
    ("event-loop lag max, ms", "lag_max", 0),
    ("last trigger's first status GET, s after the start", "startup", 1),
    ("detection latency p50, s", "latency_p50", 2),
    ("**detection latency p95, s**", "latency_p95", 2),
    ("detection latency max, s", "latency_max", 2),
    ("emulator CPU, s", "emulator_cpu", 1),
    ("emulator CPU, % of one core", "emulator_pct", 0),
    ("emulator requests per second (mean)", "emulator_rps", 0),
]


def targets(
    ours: dict[str, float] | None, naive: dict[str, float] | None, poll: float, protocol: str
) -> list[str]:
    """
    Check the targets for one N and protocol; return the verdict lines.

    :param ours: our figures.
    :param naive: the naive trigger's figures (``None`` when it was not run).
    :param poll: the poll interval, seconds.
    :param protocol: ``http`` or ``https``.
    """
    if ours is None:
        return ["- ours did not complete: no verdicts"]
    lag_ok = ours["lag_steady_p99"] < TARGETS["lag_p99_ms"]
    distinct = max(ours["connects"], ours["server_clients"])
    detection_limit = poll + TARGETS["detection_margin_s"]
    cpu_target = CPU_RATIO_TARGETS[protocol]
    lines = [
        f"- event-loop lag p99 (steady state) < {TARGETS['lag_p99_ms']:.0f} ms: "
        f"{fmt(ours['lag_steady_p99'], 1)} ms, {verdict(lag_ok)} (whole run: {fmt(ours['lag_p99'], 1)} ms; "
        f"noise floor of this machine: {fmt(ours['lag_floor_p99'], 1)} ms)",
        f"- <= {TARGETS['gets_per_poll']:.0f} GET per poll per job plus the final result GET: "
        f"{fmt(ours['gets_per_poll_excl'], 3)}, "
        f"{verdict(ours['gets_per_poll_excl'] <= TARGETS['gets_per_poll'])}",
        f"- <= {TARGETS['tcp_connections']} distinct TCP connections over the whole run: {distinct:.0f} "
        f"({ours['connects']:.0f} connects made by the client, {ours['server_clients']:.0f} client ports "
        f"seen by the server; at most {ours['max_open']:.0f} open at once), "
        f"{verdict(distinct <= TARGETS['tcp_connections'])}",
        f"- detection latency p95 <= poll interval + {TARGETS['detection_margin_s']:g} s "
        f"({detection_limit:g} s): {fmt(ours['latency_p95'], 2)} s, "
        f"{verdict(ours['latency_p95'] <= detection_limit)}",
    ]
    if naive is not None:
        total = ours["cpu"] / naive["cpu"] if naive["cpu"] else math.nan
        whole = f"whole run {total:.2f}x, {verdict(total <= cpu_target)}"
        if math.isnan(naive["killed"]) and math.isnan(ours["killed"]):
            per_poll = ours["cpu_per_poll"] / naive["cpu_per_poll"] if naive["cpu_per_poll"] else math.nan
            lines.append(
                f"- CPU per poll <= {cpu_target}x naive: {per_poll:.2f}x, {verdict(per_poll <= cpu_target)}; "
                f"{whole} (the whole-run ratio flatters the naive trigger whenever it cannot keep up: it "
                "then makes fewer polls than asked)"
            )
        else:
            lines.append(
                f"- CPU <= {cpu_target}x naive: {whole}; per poll not comparable: a variant was "
                f"stopped at the time limit (naive: {naive['polled']:.0f} of "
                f"{ours['succeeded'] + ours['other']:.0f} triggers had a poll answered), so its CPU went "
                "into polls that never completed"
            )
    else:
        lines.append(f"- CPU <= {cpu_target}x naive: naive not run at this N")
    lines.append(
        f"- every job detected: {ours['succeeded']:.0f}/{ours['succeeded'] + ours['other']:.0f} succeeded "
        "events"
    )
    return lines


def render_n(
    n: int,
    poll: float,
    finish: tuple[float, float],
    start: str,
    results: dict[str, dict[str, Any]],
    protocol: str = "http",
) -> str:
    """
    Render the side-by-side table and verdicts of one N and protocol.

    :param n: the number of triggers.
    :param poll: the poll interval.
    :param finish: the jobs' finish range.
    :param start: ``spread`` or ``burst``.
    :param results: variant -> raw report.
    :param protocol: ``http`` or ``https`` (the status server's).
    """
    figures = {v: metrics(d) for v, d in results.items() if "failed" not in d}
    labels = [LABELS[v] for v in results]
    rows = []
    for name, key, digits in ROWS:
        cells = [fmt(figures[v][key], digits) if v in figures else "failed" for v in results]
        if key == "killed":
            cells = [c.replace("n/a", "") for c in cells]
        rows.append((name, cells))
    parts = [
        f"## N = {n:,} triggers, {protocol.upper()}, poll every {poll:g} s, jobs finishing "
        f"{finish[0]:g}-{finish[1]:g} s after start",
        "",
        "Start: "
        + (
            f"trigger i starts at i/N x {poll:g} s (polls spread over the interval, as when tasks defer over "
            "time)"
            if start == "spread"
            else "all triggers at once (a triggerer restart: every poll in phase)"
        )
        + f". Time limit: {run_limit(finish):g} s after the jobs were created.",
        "",
        side_by_side(labels, rows),
        "",
        "Targets (ours):",
        "",
        *targets(figures.get("ours"), figures.get("naive"), poll, protocol),
        "",
    ]
    profiles = {v: d["profile"] for v, d in results.items() if d.get("profile")}
    if profiles:
        labels_p = [LABELS[v] for v in profiles]
        names = sorted(
            {g for p in profiles.values() for g in p},
            key=lambda g: -max(p.get(g, 0) for p in profiles.values()),
        )
        prow = []
        for group in names:
            cells = []
            for prof in profiles.values():
                total = sum(prof.values()) or 1.0
                cells.append(f"{prof.get(group, 0.0):.1f} s ({100 * prof.get(group, 0.0) / total:.0f}%)")
            prow.append((group, cells))
        parts += [
            "Where the trigger process's time goes (cProfile own time by package, shares of the busy time; "
            "profiling slows everything, so the shares matter, not the seconds):",
            "",
            side_by_side(labels_p, prow),
            "",
        ]
    for variant, data in results.items():
        if data.get("stalls"):
            seconds = data["stall_samples"] * StallSampler.EVERY_SECONDS
            parts += [
                f"{LABELS[variant]}: the event loop was stalled (no tick for > 1 s) for about {seconds:.0f} "
                "s in all; the main thread's stack, sampled every 250 ms during stalls (innermost first):",
                "",
                *[f"- {count} x `{where}`" for where, count in data["stalls"]],
                "",
            ]
        if "failed" in data:
            parts += [
                f"{LABELS[variant]} FAILED ({data['failed']}); log tail:",
                "",
                "```",
                data["log_tail"],
                "```",
                "",
            ]
        elif data.get("error_count"):
            parts += [
                f"{LABELS[variant]}: {data['error_count']} trigger task(s) raised: {data['errors'][:3]}",
                "",
            ]
        if "load" in data:
            parts.append(f"- {LABELS[variant]}: load average (1 min) before -> after: {data['load']}")
    parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the orchestrator, a worker or the emulator."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", default="1000,10000", help="comma-separated trigger counts (default %(default)s)"
    )
    parser.add_argument(
        "--poll", type=float, default=5.0, help="poll interval, seconds (default %(default)s)"
    )
    parser.add_argument(
        "--finish",
        default="20:60",
        help="low:high seconds after start when jobs finish (default %(default)s)",
    )
    parser.add_argument("--variants", default="ours,naive", help="comma-separated: ours, naive")
    parser.add_argument(
        "--naive-max-n",
        type=int,
        default=None,
        help="skip the naive trigger above this N (default: run it at every N)",
    )
    parser.add_argument(
        "--start",
        choices=("spread", "burst"),
        default="spread",
        help="spread trigger starts over one poll interval, or start all at once (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the trigger processes under cProfile and add where their CPU goes (profiling slows them)",
    )
    parser.add_argument(
        "--protocols",
        default="http",
        help="comma-separated: http, https (HTTPS through a CA made for the run; default %(default)s)",
    )
    parser.add_argument(
        "--keep-raw", default=None, help="copy each variant's raw measurements (JSON) into this directory"
    )
    parser.add_argument("--quick", action="store_true", help="N=40, poll 1 s, jobs of 2-4 s; prints only")
    parser.add_argument(
        "--output", default=None, help="results file (default benchmarks/results/triggers.md; '-': none)"
    )
    parser.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    global _CONTROL_CA
    if args.serve_emulator:
        serve_emulator(args.port, args.tls_dir)
        return 0
    if args.worker:
        _CONTROL_CA = str(Path(args.tls_dir) / "ca.pem") if args.tls_dir else None
        worker(
            args.worker,
            args.url,
            int(args.n),
            args.poll,
            args.finish,
            args.start,
            Path(args.out),
            args.profile,
        )
        return 0

    if args.quick:
        args.n, args.poll, args.finish = "40", 1.0, "2:4"
        args.output = args.output or "-"
    counts = [int(x) for x in args.n.split(",") if x.strip()]
    variants = [v for v in args.variants.split(",") if v]
    protocols = [p for p in args.protocols.split(",") if p]
    if not counts or any(c < 1 for c in counts) or not set(variants) <= set(VARIANTS) or not variants:
        parser.error("--n needs positive counts and --variants a subset of ours,naive")
    if not protocols or not set(protocols) <= set(PROTOCOLS):
        parser.error("--protocols must be a subset of http,https")
    low, high = (float(x) for x in args.finish.split(":"))
    notes = machine_notes()
    sections = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="seedance-bench-triggers-") as tmp:
        tls_dir: Path | None = None
        if "https" in protocols:
            from airflow_provider_seedance.testing.tls import make_local_certificates

            tls_dir = Path(tmp) / "tls"
            tls_dir.mkdir()
            _CONTROL_CA = str(make_local_certificates(tls_dir).ca_path)
            write_bundle(tls_dir)
        for n in counts:
            for protocol in protocols:
                results: dict[str, dict[str, Any]] = {}
                for variant in variants:
                    if variant == "naive" and args.naive_max_n is not None and n > args.naive_max_n:
                        continue
                    print(f"running {variant} with N={n} over {protocol} ...", flush=True)
                    results[variant] = run_variant(
                        variant,
                        n,
                        args.poll,
                        (low, high),
                        args.start,
                        Path(tmp),
                        args.profile,
                        tls_dir if protocol == "https" else None,
                    )
                    if args.keep_raw:
                        raw = Path(args.keep_raw) / f"{variant}-{n}-{args.start}-{protocol}.json"
                        raw.parent.mkdir(parents=True, exist_ok=True)
                        raw.write_text(json.dumps(results[variant]))
                section = render_n(n, args.poll, (low, high), args.start, results, protocol)
                print(section, flush=True)
                sections.append(section)
    command = "python benchmarks/bench_triggers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join(
        [
            "# Fan-in: concurrent triggers in one event loop",
            "",
            f"`{command.strip()}` (total {time.monotonic() - started:.0f} s). Each variant runs in a fresh "
            "trigger process against a fresh emulator process; see `benchmarks/README.md` for the method.",
            "",
            *sections,
            "## Environment",
            "",
            notes_block(finish_notes(notes)),
            "",
        ]
    )
    path = write_result("triggers", report, args.output)
    if path is not None:
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
