"""The emulator's state machine on its own (no HTTP): timelines, plans, faults, costs, tokens, the log."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from airflow_provider_seedance.testing import EmulatorState, Fault, JobPlan, RecordedRequest
from airflow_provider_seedance.testing.state import (
    DEFAULT_ERROR_MESSAGE,
    ForeignRequestError,
    UnknownRequestError,
    account_of,
    default_catalog,
)
from tests.testing._helpers import I2V, I2V_INPUT, OTHER_TOKEN, TOKEN, FakeClock


def clock_of(state: EmulatorState) -> FakeClock:
    assert isinstance(state.clock, FakeClock)
    return state.clock


# -- timeline --------------------------------------------------------------------------------------------


def test_timeline_queue_then_progress_then_success(state: EmulatorState) -> None:
    clock = clock_of(state)
    state.set_plan(JobPlan(queue_seconds=10, run_seconds=20, initial_queue_position=4))
    job = state.submit(I2V, I2V_INPUT, TOKEN)
    assert (job.phase, job.status, job.queue_position, job.finished_at) == ("in_queue", "in_queue", 4, None)

    positions = []
    for _ in range(4):
        clock.advance(2.4)
        positions.append(state.get_job(job.request_id).queue_position)
    assert positions == [4, 3, 2, 1]

    clock.advance(0.5)  # 10.1 s
    running = state.get_job(job.request_id)
    assert (running.phase, running.status, running.queue_position) == ("in_progress", "in_progress", None)

    clock.advance(19.8)  # 29.9 s
    assert state.get_job(job.request_id).phase == "in_progress"
    clock.advance(0.2)
    done = state.get_job(job.request_id)
    assert (done.phase, done.status) == ("succeeded", "completed")
    assert done.finished_at == pytest.approx(done.created_at + 30)


@pytest.mark.parametrize(("style", "status"), [("completed", "completed"), ("failed", "failed")])
def test_failed_run_reports_the_planned_status(state: EmulatorState, style: str, status: str) -> None:
    state.set_plan(
        JobPlan(queue_seconds=0, run_seconds=1, outcome="fail", failed_status_on_status_endpoint=style)
    )
    job = state.submit(I2V, I2V_INPUT, TOKEN)
    clock_of(state).advance(1)
    failed = state.get_job(job.request_id)
    assert (failed.phase, failed.status, failed.plan.error) == ("failed", status, DEFAULT_ERROR_MESSAGE)


def test_stuck_jobs_never_move(state: EmulatorState) -> None:
    state.plan_next(JobPlan(queue_seconds=1, run_seconds=1, outcome="stuck_in_queue"))
    state.plan_next(JobPlan(queue_seconds=1, run_seconds=1, outcome="stuck_running"))
    queued = state.submit(I2V, I2V_INPUT, TOKEN)
    running = state.submit(I2V, I2V_INPUT, TOKEN)
    clock_of(state).advance(10_000)
    stuck = state.get_job(queued.request_id)
    assert (stuck.phase, stuck.queue_position) == ("in_queue", 1)
    assert state.get_job(running.request_id).phase == "in_progress"


def test_time_scale_shrinks_plans_of_new_jobs(state: EmulatorState) -> None:
    state.set_plan(JobPlan(queue_seconds=100, run_seconds=100))
    before = state.submit(I2V, I2V_INPUT, TOKEN)
    state.time_scale = 0.01
    after = state.submit(I2V, I2V_INPUT, TOKEN)
    clock_of(state).advance(2.5)
    assert state.get_job(after.request_id).phase == "succeeded"
    assert state.get_job(before.request_id).phase == "in_queue"


def test_fail_probability_is_seeded() -> None:
    outcomes = []
    for _ in range(2):
        state = EmulatorState(TOKEN, clock=FakeClock(), seed=42, plan=JobPlan(fail_probability=0.5))
        outcomes.append([state.submit(I2V, {}, TOKEN).outcome for _ in range(40)])
    assert outcomes[0] == outcomes[1]
    assert 5 < outcomes[0].count("fail") < 35


# -- cancel ----------------------------------------------------------------------------------------------


def test_cancel_only_while_queued_and_idempotent(state: EmulatorState) -> None:
    state.set_plan(JobPlan(queue_seconds=5, run_seconds=5))
    queued = state.submit(I2V, I2V_INPUT, TOKEN)
    job, cancelled = state.cancel(queued.request_id)
    assert (job.phase, job.status, cancelled, job.queue_position) == ("cancelled", "cancelled", True, None)
    assert job.finished_at is not None
    # Asking again (a retried cancel whose answer was lost) says it is cancelled, and nothing moves.
    assert state.cancel(queued.request_id)[1] is True
    clock_of(state).advance(100)
    assert state.get_job(queued.request_id).phase == "cancelled"

    running = state.submit(I2V, I2V_INPUT, TOKEN)
    clock_of(state).advance(6)
    job, cancelled = state.cancel(running.request_id)
    assert (job.phase, cancelled) == ("in_progress", False)
    clock_of(state).advance(5)
    job, cancelled = state.cancel(running.request_id)
    assert (job.phase, cancelled) == ("succeeded", False)


def test_unknown_and_foreign_requests(state: EmulatorState) -> None:
    state.add_token(OTHER_TOKEN)
    job = state.submit(I2V, I2V_INPUT, OTHER_TOKEN)
    with pytest.raises(UnknownRequestError):
        state.get_job("nope")
    with pytest.raises(ForeignRequestError):
        state.get_job(job.request_id, TOKEN)
    with pytest.raises(ForeignRequestError):
        state.cancel(job.request_id, TOKEN)
    assert state.get_job(job.request_id, OTHER_TOKEN).account == account_of(OTHER_TOKEN)
    assert state.model_of(job.request_id) == I2V
    assert state.model_of("nope") is None


def test_tokens(state: EmulatorState) -> None:
    assert state.tokens == {TOKEN}
    state.add_token(OTHER_TOKEN)
    assert state.account_for(OTHER_TOKEN) == account_of(OTHER_TOKEN) != account_of(TOKEN)
    state.remove_token(OTHER_TOKEN)
    assert state.account_for(OTHER_TOKEN) is None
    assert state.account_for(None) is None
    with pytest.raises(ValueError, match="non-empty"):
        EmulatorState([])


# -- plans -----------------------------------------------------------------------------------------------


def test_plans_resolve_next_then_model_then_default(state: EmulatorState) -> None:
    other_model = "bytedance/seedance-v2/pro"
    state.set_plan(JobPlan(num_videos=1))
    state.set_model_plan(other_model, JobPlan(num_videos=2))
    state.plan_next(JobPlan(num_videos=3), count=2)
    videos = [
        state.submit(model, {}, TOKEN).plan.num_videos for model in (other_model, I2V, other_model, I2V)
    ]
    assert videos == [3, 3, 2, 1]
    state.set_model_plan(other_model, None)
    assert state.submit(other_model, {}, TOKEN).plan.num_videos == 1
    with pytest.raises(ValueError, match="count"):
        state.plan_next(JobPlan(), count=0)


def test_plan_is_json_and_validated() -> None:
    plan = JobPlan(outcome="fail", error={"code": 500123, "message": "GPU crashed"}, num_videos=2)
    assert JobPlan.model_validate_json(plan.model_dump_json()) == plan
    for bad in (
        {"queue_seconds": -1},
        {"outcome": "explode"},
        {"num_videos": 99},
        {"video_size_bytes": 10},
        {"x": 1},
    ):
        with pytest.raises(ValidationError):
            JobPlan.model_validate(bad)


# -- cost ------------------------------------------------------------------------------------------------


def test_cost_from_catalog_price_and_duration(state: EmulatorState) -> None:
    state.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    costs = [
        state.submit(I2V, {**I2V_INPUT, "duration": 8}, TOKEN).cost_usd,
        state.submit(I2V, I2V_INPUT, TOKEN).cost_usd,
        state.submit("bytedance/seedance-1-0/pro/fast/text-to-video", {"text": "x"}, TOKEN).cost_usd,
    ]
    assert costs == [0.48, 0.3, 0.2]
    state.register_model("acme/free-model", base_price_usd=None)
    assert state.submit("acme/free-model", {}, TOKEN).cost_usd is None
    state.plan_next(JobPlan(queue_seconds=0, run_seconds=0, cost_usd=1.25))
    assert state.submit(I2V, I2V_INPUT, TOKEN).cost_usd == 1.25


@pytest.mark.parametrize(
    "duration",
    [10**400, -3, 0, float("nan"), "soon", True],
    ids=["int-beyond-float", "negative", "zero", "nan", "text", "bool"],
)
def test_cost_of_an_unusable_duration_uses_the_default(state: EmulatorState, duration: object) -> None:
    # The emulator accepts what the real API would reject (bodies are the caller's to validate) and prices
    # such a job at the default 5 s instead of failing the submit.
    state.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    assert state.submit(I2V, {**I2V_INPUT, "duration": duration}, TOKEN).cost_usd == 0.3


def test_cost_is_known_only_once_the_job_ends(state: EmulatorState) -> None:
    state.set_plan(JobPlan(queue_seconds=1, run_seconds=1))
    job = state.submit(I2V, I2V_INPUT, TOKEN)
    assert job.cost_usd is None
    state.plan_next(JobPlan(queue_seconds=0, run_seconds=0, outcome="fail"))
    assert state.submit(I2V, I2V_INPUT, TOKEN).cost_usd == 0.0


# -- catalog ---------------------------------------------------------------------------------------------


def test_default_catalog_lists_every_contract_model() -> None:
    catalog = default_catalog()
    assert catalog[I2V] == {
        "model_id": I2V,
        "display_name": "Seedance 1.5 Pro Image to Video",
        "base_price_usd": 0.06,
        "price_unit": "second",
    }
    assert len(catalog) == 11
    assert {"bytedance/seedance-2.5/image-to-video/4k", "bytedance/seedance-2.5/text-to-video/1080p"} <= set(
        catalog
    )
    assert {entry["price_unit"] for entry in catalog.values()} == {"second", "output"}


def test_register_and_unregister_models(state: EmulatorState) -> None:
    state.register_model(
        "acme/video", base_price_usd=1.5, price_unit="output", display_name="Acme", tier="gold"
    )
    assert state.model_info("acme/video") == {
        "model_id": "acme/video",
        "display_name": "Acme",
        "base_price_usd": 1.5,
        "price_unit": "output",
        "tier": "gold",
    }
    state.unregister_model("acme/video")
    assert state.model_info("acme/video") is None
    with pytest.raises(ValueError, match="model id"):
        state.register_model("bad//id")


# -- faults ----------------------------------------------------------------------------------------------


def test_fault_times_skip_and_order(state: EmulatorState) -> None:
    first = Fault(kind="http_error", endpoint="status", status_code=503, times=2, skip=1)
    second = Fault(kind="drop", endpoint="any")
    state.add_fault(first)
    state.add_fault(second)
    hits = [state.take_fault("status", I2V, "r1") for _ in range(5)]
    # Call 1 is skipped by the first fault and caught by the second; calls 2-3 hit the first; then none left.
    assert hits == [second, first, first, None, None]
    assert first.times == 2  # the caller's fault object is never modified
    assert state.faults() == {}


def test_fault_matching(state: EmulatorState) -> None:
    state.add_fault(Fault(kind="slow", endpoint="status", model_id=I2V, times=None))
    state.add_fault(Fault(kind="drop", request_id="abc", times=None))
    state.add_fault(Fault(kind="unknown_status", times=None))
    assert state.take_fault("status", I2V, "x").kind == "slow"  # type: ignore[union-attr]
    assert state.take_fault("status", "other/model", "abc").kind == "drop"  # type: ignore[union-attr]
    assert state.take_fault("result", "other/model", "x").kind == "unknown_status"  # type: ignore[union-attr]
    # unknown_status fits only status and result; malformed JSON only JSON endpoints.
    assert state.take_fault("cancel", "other/model", "x") is None
    assert not Fault(kind="malformed_json").matches("download", None, None)
    assert len(state.faults()) == 3
    assert state.clear_faults() == 3


def test_fault_probability_is_seeded_and_remaining_is_visible() -> None:
    runs = []
    for _ in range(2):
        state = EmulatorState(TOKEN, seed=3)
        fault_id = state.add_fault(Fault(kind="drop", probability=0.5, times=None))
        runs.append([state.take_fault("status") is not None for _ in range(60)])
        assert state.remove_fault(fault_id) is True
        assert state.remove_fault(fault_id) is False
    assert runs[0] == runs[1]
    assert 10 < sum(runs[0]) < 50

    state = EmulatorState(TOKEN)
    fault_id = state.add_fault(Fault(kind="drop", times=3, skip=2))
    state.take_fault("status")
    state.take_fault("status")
    state.take_fault("status")
    assert state.faults()[fault_id].times == 2
    assert state.faults()[fault_id].skip == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "unknown_status", "endpoint": "submit"},
        {"kind": "malformed_json", "endpoint": "download"},
        {"kind": "malformed_json", "body": {"not": "text"}},
        {"kind": "http_error", "status_code": 200},
        {"kind": "drop", "times": 0},
        {"kind": "drop", "probability": 1.5},
        {"kind": "teleport"},
        {"kind": "drop", "endpiont": "status"},
    ],
)
def test_invalid_faults_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate(bad)


# -- request log -----------------------------------------------------------------------------------------


def entry(endpoint: str) -> RecordedRequest:
    return RecordedRequest(
        method="GET", path="/", endpoint=endpoint, headers={"authorization": "Bearer s3cret"}
    )  # type: ignore[arg-type]


def test_log_is_bounded_but_counts_are_exact() -> None:
    state = EmulatorState(TOKEN, max_log_entries=5)
    for _ in range(8):
        state.record(entry("status"))
    state.record(entry("submit"))
    assert len(state.requests()) == 5
    assert state.count("status") == 8
    assert state.count() == 9
    assert [r.endpoint for r in state.submits()] == ["submit"]
    assert len(state.requests("status")) == 4
    assert state.count("download") == 0


def test_log_redacts_the_token_in_json() -> None:
    data = entry("status").to_dict()
    assert data["headers"]["authorization"] == "Bearer <redacted>"
    assert entry("status").to_dict(redact=False)["headers"]["authorization"] == "Bearer s3cret"


def test_reset_restores_everything(state: EmulatorState) -> None:
    state.add_token(OTHER_TOKEN)
    state.set_plan(JobPlan(num_videos=4))
    state.add_fault(Fault(kind="drop"))
    state.register_model("acme/x")
    state.pricing_enabled = state.ranges_enabled = False
    state.time_scale = 0.5
    state.clock = FakeClock(5.0)
    state.submit(I2V, {}, TOKEN)
    state.record(entry("status"))
    state.reset()
    assert (
        state.tokens,
        state.default_plan,
        state.faults(),
        state.jobs(),
        state.requests(),
        state.count(),
    ) == (
        {TOKEN},
        JobPlan(),
        {},
        [],
        [],
        0,
    )
    assert state.model_info("acme/x") is None
    assert (state.pricing_enabled, state.ranges_enabled, state.time_scale) == (True, True, 1.0)
    assert isinstance(state.clock, FakeClock)
    assert state.clock() == 1_000.0


def test_state_is_safe_across_threads() -> None:
    state = EmulatorState(TOKEN)
    state.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                job = state.submit(I2V, {}, TOKEN)
                state.get_job(job.request_id)
                state.record(entry("status"))
                state.take_fault("status")
        except BaseException as err:
            errors.append(err)

    state.add_fault(Fault(kind="drop", times=1000))
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert state.job_count() == 800
    assert state.count("status") == 800
    assert state.faults()[1].times == 200


def test_job_snapshot_json() -> None:
    state = EmulatorState(TOKEN, clock=FakeClock())
    data = state.submit(I2V, I2V_INPUT, TOKEN).to_dict()
    assert data["phase"] == "in_queue"
    assert data["created_at"].endswith("Z")
    assert data["finished_at"] is None
    assert data["body"] == I2V_INPUT
    assert TOKEN not in str(data)


@pytest.mark.parametrize("bad", [{"time_scale": 0}, {"time_scale": float("nan")}, {"max_log_entries": 0}])
def test_state_arguments_are_checked(bad: dict) -> None:
    with pytest.raises(ValueError):
        EmulatorState(TOKEN, **bad)
