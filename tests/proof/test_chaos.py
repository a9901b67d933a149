"""Chaos run: hundreds of generations under random faults, seeded and bounded; no duplicate, no leftover.

Every fault kind the emulator knows is armed at once with a small probability (``Fault(probability=...,
times=None)``, drawn from the emulator's seeded generator), on every endpoint it applies to. Then:

* ``DIRECT`` generations at hook/trigger level, as the triggerer runs them: ``asubmit`` + the real
  ``SeedanceRequestTrigger`` (most), or ``submit`` + the worker's ``wait_for_request`` loop in a thread
  (some), all concurrently, with a few jobs stuck in the queue to hit the deadline-and-cancel path and some
  that the API answers 404 for right after the submit (read-after-write lag);
* ``DAG_RUNS`` full ``dag.test()`` runs of generate >> SeedanceToS3Operator pairs (deferrable and sync,
  ``retries=1`` on every task), copying into moto, with random S3 ``UploadPart`` failures on large videos
  and read-after-write lag on every generation.

A few more direct generations use a connection whose token has a line break inside: refused when the
connection is read, they must fail cleanly without a single request.

Each generation carries a unique marker in its prompt, so the emulator's jobs can be counted per logical
generation. The report prints generations succeeded, failed cleanly (a ``SeedanceError`` with a message),
duplicates (more than one job for one logical generation: must be 0) and leftovers (unverified objects and
unfinished multipart uploads: must be 0). Any other ending (an unexpected exception type, an empty message,
a wait that outlived its deadline) counts as unclean and fails the test.

Why the DAG runs' fault mix has no failing jobs: a retry that finds its stored request *failed* submits a
new one by design (SPEC: "submit again only when it failed or is gone"), so those would be new logical
generations, not duplicates. 404001 is in the mix everywhere: within the grace after the submit
(``NOT_FOUND_GRACE_SECONDS``, far longer than a chaos generation) it is read-after-write lag, so a retry
re-attaches instead of paying again. The fault matrix pins the "gone" case after the grace.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import pytest
from airflow.sdk import DAG

from airflow_provider_seedance.exceptions import SeedanceError
from airflow_provider_seedance.hooks.seedance import SeedanceHook, aclose_shared_clients
from airflow_provider_seedance.lifecycle import RequestTracker, finish_event, wait_for_request
from airflow_provider_seedance.models import (
    SeedanceImageToVideoInput,
    SeedanceInputModel,
    SeedanceTriggerEvent,
)
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import EmulatorState, Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import TEST_TOKEN, conn_json
from tests.operators._dag_support import IMAGE, START, run_dag, task_instances, unique_dag_id
from tests.proof._support import (
    BUCKET,
    FAST,
    NEWLINE_TOKEN_CONN_ID,
    ErrorLog,
    UploadPartFaults,
    moto_bucket,
    newline_token_conn,
    s3_leftovers,
    s3_objects,
    served_sha256,
)

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.usefixtures("airflow_db")

SEED = int(os.environ.get("PROOF_CHAOS_SEED", "20251125"))
"""Seeds the emulator's fault draws, the job outcomes, the S3 faults and the mix of paths."""

DIRECT = 188
"""Generations at hook/trigger level."""

NEWLINE_TOKEN_GENERATIONS = 4
"""Direct generations on a connection whose token has a line break inside (refused before any request)."""

SYNC_SHARE = 0.2
"""Share of the direct generations that poll in a worker thread instead of a trigger."""

COPY_SHARE = 0.3
"""Share of the direct generations whose video is then copied to S3 (the real operator, outside Airflow)."""

BIG_SHARE = 0.1
"""Share of the direct generations whose video is 6 MiB (copied as a staged multipart upload)."""

STUCK_SHARE = 0.05
"""Share of the direct generations whose job never leaves the queue (deadline, then cancel)."""

LAG_SHARE = 0.1
"""Share of the direct generations that the API answers 404 for right after the submit."""

LAG_SECONDS = 0.5
"""The read-after-write lag of those jobs (``JobPlan.not_found_seconds``), and of every DAG-run job."""

DAG_RUNS = 3
PAIRS_PER_RUN = 4
"""Full DAG runs, each with this many generate >> store pairs."""

CONCURRENCY = 24
"""Direct generations in flight at once."""

FAULT_PROBABILITY = 0.012
"""Chance that one armed fault hits a matching call; ~10 faults per endpoint make ~12% of calls faulty."""

DOWNLOAD_FAULT_PROBABILITY = 0.04
"""Downloads are few (DAG runs only), so their 10 faults hit more often: ~34% of downloads (a capped range
changes only answers to a Range request)."""

UPLOAD_PART_FAILURE_PROBABILITY = 0.35
"""Chance that one S3 UploadPart (large videos only) fails."""

DEADLINE_SECONDS = 6.0
"""The trigger's (and the worker loop's) ``end_time``, from submission."""

HANG_MARGIN_SECONDS = 30.0
"""A wait still running this long after its deadline is a hang (the test fails). Generous: one last poll
may legitimately take (max_retries + 1) x (call timeout + backoff), stretched on a starved CPU."""

CHAOS_CONN_ID = "seedance_chaos"
CALL_TIMEOUT = 0.4
SLOW_SECONDS = 0.8

MiB = 1024 * 1024
DIRECT_MODEL = "proof/chaos/direct"
DIRECT_BIG_MODEL = "proof/chaos/direct-big"
STUCK_MODEL = "proof/chaos/direct-stuck"
LAG_MODEL = "proof/chaos/direct-lag"
DAG_MODEL_SMALL = "proof/chaos/dag-small"
DAG_MODEL_BIG = "proof/chaos/dag-big"

Ending = Literal["succeeded", "failed_cleanly", "unclean"]

log = logging.getLogger(__name__)


def chaos_faults(model_id: str, *, with_not_found: bool) -> list[Fault]:
    """
    Return every fault kind on every endpoint it applies to, each hitting with a small probability.

    :param model_id: the model the faults are scoped to.
    :param with_not_found: also answer 404001 (request unknown/expired) on status and result.
    """
    faults: list[Fault] = []
    for endpoint in ("submit", "status", "result", "cancel", "download"):
        chance = DOWNLOAD_FAULT_PROBABILITY if endpoint == "download" else FAULT_PROBABILITY
        common = {"model_id": model_id, "probability": chance, "times": None}
        kinds: list[dict[str, Any]] = [
            {"kind": "http_error", "status_code": 429, "retry_after": 0.1},
            {"kind": "http_error", "status_code": 500},
            {"kind": "http_error", "status_code": 502},
            {"kind": "http_error", "status_code": 503},
            {"kind": "drop"},
            {"kind": "slow", "delay_seconds": SLOW_SECONDS},
            {"kind": "truncated"},
        ]
        if endpoint != "download":
            kinds += [
                {"kind": "malformed_json"},
                {"kind": "error_200"},
                # The normal answer (a submit's request_id) plus an error: a created request all the same.
                {"kind": "payload_with_error"},
                {"kind": "payload_with_error", "body": {"code": 500, "message": "internal error"}},
                {"kind": "http_error", "status_code": 401, "error_code": 400004},
                {"kind": "http_error", "status_code": 402, "error_code": 400002},
            ]
        if endpoint in ("status", "result"):
            kinds.append({"kind": "unknown_status"})
            if with_not_found:
                kinds.append({"kind": "http_error", "status_code": 404, "error_code": 404001})
        if endpoint == "download":
            kinds.append({"kind": "http_error", "status_code": 404, "error_code": 404001})
            # CDN shapes: an unsized answer that breaks, and 206 answers capped below what was asked.
            kinds.append({"kind": "truncated", "hide_length": True})
            kinds.append({"kind": "capped_range", "cap_bytes": 64 * 1024})
        faults += [Fault(endpoint=endpoint, **kind, **common) for kind in kinds]
    return faults


@dataclass(frozen=True)
class Generation:
    """
    How one logical generation ended.

    :param marker: the unique prompt marker that ties emulator jobs to this generation.
    :param path: ``trigger``, ``worker`` or ``dag``.
    :param ending: ``succeeded``, ``failed_cleanly`` or ``unclean``.
    :param detail: the exception type (for failures).
    :param wait_seconds: from the submit to the outcome of the wait (a DAG run: its share of the run).
    :param copied: its video was (to be) copied to S3.
    :param copy_seconds: how long the copy took.
    """

    marker: str
    path: str
    ending: Ending
    detail: str
    wait_seconds: float
    copied: bool = False
    copy_seconds: float = 0.0


def classify(error: BaseException | None) -> tuple[Ending, str]:
    """
    Say whether a generation that raised ``error`` failed cleanly: a ``SeedanceError`` with a message.

    :param error: the exception the generation ended with (``None``: it succeeded).
    """
    if error is None:
        return "succeeded", ""
    if isinstance(error, SeedanceError) and str(error).strip():
        return "failed_cleanly", type(error).__name__
    return "unclean", f"{type(error).__name__}: {error!r}"


def input_for(marker: str) -> SeedanceInputModel:
    """
    Return the typed input of one generation (the marker in its prompt).

    :param marker: the generation's unique marker.
    """
    return SeedanceImageToVideoInput.validate_input(
        {"prompt": f"Chaos generation {marker}", "first_frame_image_url": IMAGE, "duration": 4}
    )


# ---------------------------------------------------------------------------------------------------------
# Direct generations: the trigger (async) and the worker loop (sync, in a thread)
# ---------------------------------------------------------------------------------------------------------


def conn_for(marker: str) -> str:
    """
    Return the connection a direct generation uses: the chaos one, or the one with a newline in its token.

    :param marker: the generation's marker.
    """
    return NEWLINE_TOKEN_CONN_ID if marker.startswith("newline-") else CHAOS_CONN_ID


async def trigger_generation(marker: str, model_id: str) -> tuple[BaseException | None, str | None]:
    """
    Submit with ``asubmit``, wait with the real trigger, end like the operator does.

    Returns the error (``None`` on success) and the request id (``None`` when the submit failed).

    :param marker: the generation's marker.
    :param model_id: the model to submit to.
    """
    hook = SeedanceHook(conn_for(marker))
    request_id = None
    try:
        submitted = await hook.asubmit(model_id, input_for(marker))
        request_id = submitted.request_id
        # What the operator passes: the submit time, so a 404 right after it is read-after-write lag.
        trigger = SeedanceRequestTrigger(
            submitted.request_id,
            CHAOS_CONN_ID,
            poll_interval=0.15,
            end_time=time.time() + DEADLINE_SECONDS,
            cancel_on_kill=True,
            submitted_at=time.time(),
        )
        try:
            event = await asyncio.wait_for(trigger.run().__anext__(), DEADLINE_SECONDS + HANG_MARGIN_SECONDS)
        except asyncio.TimeoutError:
            hang = TimeoutError(f"the trigger for {request_id} outlived its deadline (a hang)")
            return hang, request_id
        parsed = SeedanceTriggerEvent.parse(event.payload, expected_request_id=submitted.request_id)
        if parsed.status == "timeout":
            try:  # what the operator does at the deadline (best effort)
                await hook.acancel(submitted.request_id)
            except SeedanceError as exc:
                log.info("cancel failed: %s", exc)
        finish_event(parsed, model_id=model_id, log=log, hook=None)
    except Exception as exc:
        return exc, request_id
    return None, request_id


def worker_generation(marker: str, model_id: str) -> tuple[BaseException | None, str | None]:
    """
    Submit with ``submit``, poll with the worker loop (``deferrable=False``), end like the operator does.

    Returns the error (``None`` on success) and the request id (``None`` when the submit failed).

    :param marker: the generation's marker.
    :param model_id: the model to submit to.
    """
    hook = SeedanceHook(conn_for(marker))
    request_id = None
    try:
        submitted = hook.submit(model_id, input_for(marker))
        request_id = submitted.request_id
        outcome = wait_for_request(
            hook,
            RequestTracker(submitted.request_id, log, submitted_at=time.time()),
            end_time=time.time() + DEADLINE_SECONDS,
            poll_interval=0.15,
        )
        finish_event(outcome, model_id=model_id, log=log, hook=hook)
    except Exception as exc:
        return exc, request_id
    finally:
        hook.close()
    return None, request_id


class _XComSink:
    """Stands in for the task instance of a transfer run outside Airflow (its XCom push is dropped)."""

    def xcom_push(self, key: str, value: Any) -> None:
        """Drop the value."""


def copy_to_s3(marker: str, request_id: str) -> BaseException | None:
    """
    Copy a generated video into S3 with the real ``SeedanceToS3Operator.execute`` (outside Airflow).

    :param marker: the generation's marker (names the key).
    :param request_id: the succeeded request.
    """
    operator = SeedanceToS3Operator(
        task_id=f"store-{marker}",
        request_id=request_id,
        dest_bucket=BUCKET,
        dest_key=f"chaos/{marker}/clip.mp4",
        seedance_conn_id=CHAOS_CONN_ID,
        aws_conn_id=None,
        part_size=5 * MiB,
        download_timeout=CALL_TIMEOUT,
        download_max_retries=3,
        download_retry_backoff=0.05,
    )
    try:
        operator.execute({"ti": _XComSink()})  # type: ignore[arg-type,typeddict-item]
    except Exception as exc:
        return exc
    return None


async def run_direct(plan: list[tuple[str, str, str, bool]]) -> list[Generation]:
    """
    Run the direct generations, :data:`CONCURRENCY` at a time.

    :param plan: ``(marker, path, model_id, copy to S3)`` per generation.
    """
    slots = asyncio.Semaphore(CONCURRENCY)
    # Own threads, one per slot: a generation never waits for a thread (its time is its own).
    threads = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="chaos")
    loop = asyncio.get_running_loop()

    async def one(marker: str, path: str, model_id: str, copy: bool) -> Generation:
        async with slots:
            started = time.monotonic()
            if path == "trigger":
                error, request_id = await trigger_generation(marker, model_id)
            else:
                error, request_id = await loop.run_in_executor(threads, worker_generation, marker, model_id)
            waited = time.monotonic() - started
            if error is None and copy and request_id is not None:
                error = await loop.run_in_executor(threads, copy_to_s3, marker, request_id)
            ending, detail = classify(error)
            return Generation(marker, path, ending, detail, waited, copy, time.monotonic() - started - waited)

    try:
        return list(await asyncio.gather(*(one(*item) for item in plan)))
    finally:
        threads.shutdown(wait=True)
        await aclose_shared_clients()


# ---------------------------------------------------------------------------------------------------------
# Full DAG runs with the transfer
# ---------------------------------------------------------------------------------------------------------


def run_dag_generations(run: int, deferrable: bool, errors: ErrorLog, rng: random.Random) -> list[Generation]:
    """
    Run one DAG of generate >> store pairs with dag.test(); classify each pair.

    :param run: the run number (markers and keys).
    :param deferrable: how the generate tasks wait.
    :param errors: collects the exception of every failed try.
    :param rng: picks small or large videos.
    """
    pairs: list[tuple[str, str]] = []
    retry: dict[str, Any] = {
        "retries": 1,
        "retry_delay": timedelta(0),
        "on_retry_callback": errors.callback,
        "on_failure_callback": errors.callback,
    }
    with DAG(unique_dag_id(f"proof_chaos_{run}"), schedule=None, start_date=START) as dag:
        for index in range(PAIRS_PER_RUN):
            marker = f"dag{run}-{index}"
            model_id = DAG_MODEL_BIG if rng.random() < 0.4 else DAG_MODEL_SMALL
            generate = SeedanceImageToVideoOperator(
                task_id=f"gen-{index}",
                model_id=model_id,
                prompt=f"Chaos generation {marker}",
                first_frame_image_url=IMAGE,
                duration=4,
                seedance_conn_id=CHAOS_CONN_ID,
                deferrable=deferrable,
                poll_interval=0.15,
                timeout=DEADLINE_SECONDS,
                **retry,
            )
            store = SeedanceToS3Operator(
                task_id=f"store-{index}",
                request_id=f"{{{{ ti.xcom_pull(task_ids='gen-{index}', key='request_id') }}}}",
                dest_bucket=BUCKET,
                dest_key=f"chaos/{marker}/clip.mp4",
                seedance_conn_id=CHAOS_CONN_ID,
                aws_conn_id=None,
                part_size=5 * MiB,
                download_timeout=CALL_TIMEOUT,
                download_max_retries=3,
                download_retry_backoff=0.05,
                **retry,
            )
            generate >> store
            pairs.append((marker, f"{index}"))
    started = time.monotonic()
    dag_run = run_dag(dag)
    seconds = time.monotonic() - started
    tis = {task_id: ti for (task_id, _), ti in task_instances(dag_run).items()}
    generations = []
    for marker, number in pairs:
        states = (str(tis[f"gen-{number}"].state), str(tis[f"store-{number}"].state))
        tried = errors.of(dag_run.dag_id, f"gen-{number}") + errors.of(dag_run.dag_id, f"store-{number}")
        last = tried[-1].error if tried else None
        if states == ("success", "success"):
            ending, detail = classify(None)
        elif states in (("failed", "upstream_failed"), ("success", "failed")):
            ending, detail = classify(last)
        else:
            ending, detail = "unclean", f"task states {states}"
        generations.append(Generation(marker, "dag", ending, detail, seconds / len(pairs), copied=True))
    return generations


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    """What the chaos run produced."""

    generations: list[Generation]
    jobs_per_marker: Counter[str | None]
    posts_per_marker: Counter[str | None]
    faults_hit: Counter[str]
    upload_parts_failed: int
    leftovers: int
    objects: list[str]
    seconds: float
    direct_seconds: float
    bad_objects: list[str] = field(default_factory=list)
    lag_answers: int = 0
    lag_succeeded: int = 0

    def count(self, ending: Ending, path: str | None = None) -> int:
        """Count the generations that ended ``ending`` (on ``path``)."""
        return sum(1 for g in self.generations if g.ending == ending and path in (None, g.path))

    @property
    def duplicates(self) -> int:
        """Jobs beyond the first for one logical generation (each would be a second bill)."""
        return sum(count - 1 for count in self.jobs_per_marker.values() if count > 1)

    def render(self) -> str:
        """Return the printed report."""
        lines = [
            f"chaos run, seed {SEED}: {len(self.generations)} generations in {self.seconds:.1f} s "
            f"(direct {self.direct_seconds:.1f} s, DAG runs {self.seconds - self.direct_seconds:.1f} s)",
            f"{'path':<10}{'total':>7}{'succeeded':>11}{'failed cleanly':>16}{'unclean':>9}",
        ]
        for path in ("trigger", "worker", "dag", None):
            total = sum(1 for g in self.generations if path in (None, g.path))
            lines.append(
                f"{path or 'all':<10}{total:>7}{self.count('succeeded', path):>11}"
                f"{self.count('failed_cleanly', path):>16}{self.count('unclean', path):>9}"
            )
        failures = Counter(g.detail for g in self.generations if g.ending == "failed_cleanly")
        lines.append("clean failures by type: " + ", ".join(f"{k} {v}" for k, v in failures.most_common()))
        lines.append("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_hit.items())))
        lines.append(f"S3 UploadPart failures injected: {self.upload_parts_failed}")
        lines.append(
            f"404 answers of read-after-write lag (right after a submit): {self.lag_answers}; direct "
            f"generations with lag that succeeded: {self.lag_succeeded}"
        )
        lines.append(
            f"submit POSTs {sum(self.posts_per_marker.values())}, jobs started "
            f"{sum(self.jobs_per_marker.values())} (generations with no job: "
            f"{sum(1 for g in self.generations if not self.jobs_per_marker[g.marker])})"
        )
        copies = [g for g in self.generations if g.copied and g.ending != "unclean"]
        lines.append(
            f"generations meant to be copied to S3: {len(copies)} (verified objects stored: "
            f"{len(self.objects)})"
        )
        waits = sorted(g.wait_seconds for g in self.generations if g.path != "dag")
        lines.append(
            f"direct generations, submit to outcome: median {waits[len(waits) // 2]:.2f} s, "
            f"max {waits[-1]:.2f} s (deadline {DEADLINE_SECONDS:g} s); slowest copy "
            f"{max((g.copy_seconds for g in self.generations), default=0.0):.2f} s"
        )
        lines.append(f"duplicates {self.duplicates}, leftovers {self.leftovers}")
        return "\n".join(lines)


def _marker_of(body: Any) -> str | None:
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if isinstance(prompt, str) and prompt.startswith("Chaos generation "):
        return prompt.removeprefix("Chaos generation ")
    return None


@pytest.fixture(scope="module")
def chaos(module_patch: pytest.MonkeyPatch) -> Iterator[ChaosReport]:
    """Serve a seeded emulator with every fault armed, run the generations, collect the figures."""
    rng = random.Random(SEED)
    state = EmulatorState(TEST_TOKEN, plan=FAST, seed=SEED)
    with SeedanceEmulator(token=TEST_TOKEN, state=state) as emulator, moto_bucket() as s3:
        module_patch.setenv(
            f"AIRFLOW_CONN_{CHAOS_CONN_ID.upper()}", conn_json(emulator, timeout=CALL_TIMEOUT)
        )
        module_patch.setenv(f"AIRFLOW_CONN_{NEWLINE_TOKEN_CONN_ID.upper()}", newline_token_conn(emulator))
        module_patch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
        upload_faults = UploadPartFaults(chance=(UPLOAD_PART_FAILURE_PROBABILITY, random.Random(SEED + 1)))
        upload_faults.install(module_patch)
        models: dict[str, tuple[JobPlan, bool]] = {
            DIRECT_MODEL: (FAST.model_copy(update={"fail_probability": 0.1}), True),
            DIRECT_BIG_MODEL: (
                FAST.model_copy(update={"fail_probability": 0.1, "video_size_bytes": 6 * MiB}),
                True,
            ),
            STUCK_MODEL: (FAST.model_copy(update={"outcome": "stuck_in_queue"}), True),
            LAG_MODEL: (FAST.model_copy(update={"not_found_seconds": LAG_SECONDS}), True),
            DAG_MODEL_SMALL: (FAST.model_copy(update={"not_found_seconds": LAG_SECONDS}), True),
            DAG_MODEL_BIG: (
                FAST.model_copy(update={"video_size_bytes": 6 * MiB, "not_found_seconds": LAG_SECONDS}),
                True,
            ),
        }
        for model_id, (plan, with_not_found) in models.items():
            state.register_model(model_id)
            state.set_model_plan(model_id, plan)
            for fault in chaos_faults(model_id, with_not_found=with_not_found):
                state.add_fault(fault)

        started = time.monotonic()
        direct_plan = []
        for index in range(DIRECT):
            path = "worker" if rng.random() < SYNC_SHARE else "trigger"
            draw = rng.random()
            model_id = (
                STUCK_MODEL
                if draw < STUCK_SHARE
                else DIRECT_BIG_MODEL
                if draw < STUCK_SHARE + BIG_SHARE
                else LAG_MODEL
                if draw < STUCK_SHARE + BIG_SHARE + LAG_SHARE
                else DIRECT_MODEL
            )
            copy = rng.random() < COPY_SHARE
            direct_plan.append((f"direct-{index}", path, model_id, copy))
        for index in range(NEWLINE_TOKEN_GENERATIONS):
            direct_plan.append((f"newline-{index}", ("trigger", "worker")[index % 2], DIRECT_MODEL, False))
        generations = _run_in_fresh_loop(lambda: run_direct(direct_plan))
        direct_seconds = time.monotonic() - started

        errors = ErrorLog()
        for run in range(DAG_RUNS):
            generations += run_dag_generations(run, deferrable=run % 2 == 0, errors=errors, rng=rng)
        seconds = time.monotonic() - started

        jobs = Counter(_marker_of(job.body) for job in state.jobs())
        posts = Counter(_marker_of(r.body) for r in state.requests("submit"))
        hits = Counter(f"{r.endpoint}:{r.fault}" for r in state.requests() if r.fault)
        # 404s no fault sent: the lag of the plans' not_found_seconds.
        lag_answers = sum(
            1 for r in state.requests() if r.status_code == 404 and not r.fault and r.endpoint != "download"
        )
        lagged = {marker for marker, _, model_id, _ in direct_plan if model_id == LAG_MODEL}
        # Every object must be a whole copy of one of the two files the emulator serves.
        served = {served_sha256(None), served_sha256(6 * MiB)}
        leftovers = s3_leftovers(s3, served=served)
        objects = s3_objects(s3)
        bad = []
        for key in objects:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if (len(body), hashlib.sha256(body).hexdigest()) not in served:
                bad.append(key)
        report = ChaosReport(
            generations=generations,
            jobs_per_marker=jobs,
            posts_per_marker=posts,
            faults_hit=hits,
            upload_parts_failed=len(upload_faults.failed),
            leftovers=leftovers.count,
            objects=objects,
            seconds=seconds,
            direct_seconds=direct_seconds,
            bad_objects=bad,
            lag_answers=lag_answers,
            lag_succeeded=sum(1 for g in generations if g.marker in lagged and g.ending == "succeeded"),
        )
        print("\n" + report.render())
        yield report


def _run_in_fresh_loop(factory: Callable[[], Any]) -> Any:
    """Run a coroutine in a new event loop on its own thread (the test thread may already own one)."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="chaos-loop")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


# ---------------------------------------------------------------------------------------------------------
# The assertions
# ---------------------------------------------------------------------------------------------------------


def test_every_generation_ended_cleanly(chaos: ChaosReport) -> None:
    """Each generation succeeded or failed with a SeedanceError carrying a message; nothing hung."""
    unclean = [g for g in chaos.generations if g.ending == "unclean"]
    assert unclean == []
    assert len(chaos.generations) == DIRECT + NEWLINE_TOKEN_GENERATIONS + DAG_RUNS * PAIRS_PER_RUN
    # Bounded: no wait outlived its deadline by more than the hang margin (the trigger's is also enforced
    # by asyncio.wait_for: a hang would have ended "unclean").
    assert (
        max(g.wait_seconds for g in chaos.generations if g.path != "dag")
        < DEADLINE_SECONDS + HANG_MARGIN_SECONDS
    )


def test_no_logical_generation_was_submitted_twice(chaos: ChaosReport) -> None:
    """Jobs per logical generation (by the emulator's own records) never exceed one."""
    assert chaos.duplicates == 0
    assert None not in chaos.jobs_per_marker
    assert set(chaos.jobs_per_marker) <= {g.marker for g in chaos.generations}


def test_a_token_with_a_newline_sends_nothing(chaos: ChaosReport) -> None:
    """Generations on the newline-token connection fail with a configuration error, sending nothing."""
    refused = [g for g in chaos.generations if g.marker.startswith("newline-")]
    assert len(refused) == NEWLINE_TOKEN_GENERATIONS
    assert {(g.ending, g.detail) for g in refused} == {("failed_cleanly", "SeedanceConfigurationError")}
    assert all(chaos.posts_per_marker[g.marker] == 0 for g in refused)


def test_nothing_partial_is_left_in_s3(chaos: ChaosReport) -> None:
    """No unverified or staging object, no open multipart upload; every object is a full, verified copy."""
    assert chaos.leftovers == 0
    assert chaos.bad_objects == []
    stored = {key.split("/")[1] for key in chaos.objects}
    copied = {g.marker for g in chaos.generations if g.ending == "succeeded" and g.copied}
    assert stored == copied


def test_the_chaos_was_real(chaos: ChaosReport) -> None:
    """The run met faults on every endpoint, both outcomes, and S3 failures (else it proves nothing)."""
    endpoints = {hit.split(":")[0] for hit in chaos.faults_hit}
    assert endpoints >= {"submit", "status", "result", "download"}
    assert sum(chaos.faults_hit.values()) >= 60
    assert sum(n for hit, n in chaos.faults_hit.items() if hit.startswith("download:")) >= 3
    assert chaos.count("succeeded") >= len(chaos.generations) // 2
    assert chaos.count("failed_cleanly") >= 10
    assert chaos.count("succeeded", "dag") >= 1
    # Read-after-write lag was met (404 right after a submit) and did not end those waits.
    assert chaos.lag_answers >= 10
    assert chaos.lag_succeeded >= 1
