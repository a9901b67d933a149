"""The cost guard: estimates from the model catalog, and the budget check against the emulator over HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_seedance.catalog import (
    SEEDANCE_1_LITE_I2V_MODEL_ID,
    SEEDANCE_1_PRO_FAST_T2V_MODEL_ID,
    SEEDANCE_2_5_T2V_MODEL_IDS,
    SEEDANCE_2_PRO_MODEL_ID,
    Seedance2ProInput,
    validate_request_body,
)
from airflow_provider_seedance.cost import CostEstimate, check_budget, estimate_cost_usd
from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceCostLimitError,
    SeedanceInputError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    ModelInfo,
    SeedanceImageToVideoInput,
)
from airflow_provider_seedance.operators._request_store import STATE_KEY, input_fingerprint
from airflow_provider_seedance.operators.seedance import SeedanceSubmitOperator
from airflow_provider_seedance.testing import Fault, JobPlan
from tests._generation import BODY, ESTIMATE_5S, STUCK, billed_cost, i2v
from tests._support import TEST_TOKEN
from tests.operators import _dag_support
from tests.operators._dag_support import (
    MODEL,
    CapturedLogs,
    FakeTaskInstance,
    FakeTaskStateStore,
    make_context,
)

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

SEED = SEEDANCE_1_5_PRO_I2V_MODEL_ID
IMG = "https://cdn.example.com/frame.png"

# The operator tests' emulator fixtures: one server for the session, reset around every test (much faster).
shared_emulator = _dag_support.shared_emulator
emulator = _dag_support.emulator


def info(price: float | None, unit: str | None) -> ModelInfo:
    return ModelInfo(model_id="m", base_price_usd=price, price_unit=unit)


# ---------------------------------------------------------------------------------------------------------
# estimate_cost_usd (pure)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_info", "model_id", "body", "usd", "basis"),
    [
        (info(0.1, "second"), SEED, {"duration": 8}, 0.8, "0.1 USD/second x 8 s"),
        (info(0.07, "second"), SEED, {"duration": 12}, 0.84, "0.07 USD/second x 12 s"),
        (
            info(0.1, "second"),
            SEED,
            {"prompt": "p"},
            0.5,
            "0.1 USD/second x 5 s (the model's default duration)",
        ),
        (info(0.12, "seconds"), SEEDANCE_2_PRO_MODEL_ID, {"duration": 15}, 1.8, "0.12 USD/second x 15 s"),
        (info(0.2, "per_second"), "vendor/other", {"duration": 4.5}, 0.9, "0.2 USD/second x 4.5 s"),
        (info(0.5, "output"), SEED, {"duration": 12}, 0.5, "0.5 USD/output x 1 output"),
        (
            info(0.5, "Outputs"),
            "vendor/other",
            {"num_outputs": 3},
            1.5,
            "0.5 USD/output x 3 outputs (num_outputs)",
        ),
        (
            info(0.25, "video"),
            "vendor/other",
            {"num_videos": 2},
            0.5,
            "0.25 USD/video x 2 videos (num_videos)",
        ),
        (info(0.04, "image"), "vendor/other", {"num_images": True}, 0.04, "0.04 USD/image x 1 image"),
        (info(0.0, "second"), SEED, {"duration": 10}, 0.0, "0 USD/second x 10 s"),
    ],
)
def test_estimates(
    model_info: ModelInfo, model_id: str, body: dict[str, Any], usd: float, basis: str
) -> None:
    estimate = estimate_cost_usd(model_info, body, model_id)
    assert estimate == CostEstimate(usd=usd, basis=basis, reason="")
    assert estimate.known


@pytest.mark.parametrize(
    ("model_info", "model_id", "body", "reason"),
    [
        (info(None, "second"), SEED, {}, "gives no base_price_usd"),
        (info(0.1, None), SEED, {}, "gives no price_unit"),
        (info(0.1, " "), SEED, {}, "gives no price_unit"),
        (info(-1.0, "second"), SEED, {}, "unusable base_price_usd"),
        (info(float("inf"), "second"), SEED, {}, "unusable base_price_usd"),
        (info(0.1, "token"), SEED, {}, "per 'token', a unit this provider cannot estimate"),
        (info(0.1, "second"), SEEDANCE_2_5_T2V_MODEL_IDS["4k"], {"prompt": "p"}, "set 'duration'"),
        (info(0.1, "second"), SEEDANCE_1_LITE_I2V_MODEL_ID, {"prompt": "p"}, "video length is unknown"),
        (info(0.1, "second"), "vendor/other", {}, "video length is unknown"),
    ],
)
def test_unknown_estimates_say_why(
    model_info: ModelInfo, model_id: str, body: dict[str, Any], reason: str
) -> None:
    estimate = estimate_cost_usd(model_info, body, model_id)
    assert estimate.usd is None
    assert not estimate.known
    assert reason in estimate.reason


def test_estimate_accepts_an_input_model() -> None:
    model = Seedance2ProInput(prompt="p", duration=10)
    estimate = estimate_cost_usd(info(0.1, "second"), model, SEEDANCE_2_PRO_MODEL_ID)
    assert estimate.usd == 1.0


def test_sparse_model_without_duration_is_priced_at_its_default() -> None:
    model = Seedance2ProInput(prompt="p")
    assert model.to_request_body() == {"prompt": "p"}
    estimate = estimate_cost_usd(info(0.1, "second"), model, SEEDANCE_2_PRO_MODEL_ID)
    assert estimate.usd == 0.5
    assert "default duration" in estimate.basis


# ---------------------------------------------------------------------------------------------------------
# check_budget against the emulator, over real HTTP
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def hook(seedance_conn: str) -> Iterator[SeedanceHook]:
    hook = SeedanceHook(seedance_conn)
    yield hook
    hook.close()


def seed_body(duration: int) -> dict[str, Any]:
    return SeedanceImageToVideoInput.validate_input(
        {"prompt": "A cat walks", "first_frame_image_url": IMG, "duration": duration}
    ).to_request_body()


def test_within_budget_returns_the_estimate(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    # The emulator's catalog prices Seedance 1.5 Pro at 0.06 USD per second.
    estimate = check_budget(hook, SEED, seed_body(10), 1.0)
    assert estimate == CostEstimate(usd=0.6, basis="0.06 USD/second x 10 s", reason="")
    (call,) = emulator.state.requests("model")
    assert call.method == "GET"
    assert call.path == f"/v1/models/{SEED}"
    assert emulator.submits() == []


def test_estimate_equal_to_the_budget_is_within_it(hook: SeedanceHook) -> None:
    assert check_budget(hook, SEED, seed_body(5), 0.3).usd == 0.3


def test_over_budget_refuses_before_submitting(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    with pytest.raises(SeedanceCostLimitError) as info:
        check_budget(hook, SEED, seed_body(12), 0.5)
    message = str(info.value)
    assert "0.72 USD" in message
    assert "0.06 USD/second x 12 s" in message
    assert "max_cost_usd=0.5 USD" in message
    assert "Nothing was submitted" in message
    assert isinstance(info.value, AirflowFailException), "a task retry would be refused again"
    assert TEST_TOKEN not in message
    assert emulator.submits() == []


def test_per_output_price(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    # Seedance 1.0 Pro Fast is priced per output (0.2 USD) in the emulator's catalog.
    with pytest.raises(SeedanceCostLimitError, match=r"0\.2 USD \(0\.2 USD/output x 1 output"):
        check_budget(hook, SEEDANCE_1_PRO_FAST_T2V_MODEL_ID, {"text": "A drone"}, 0.1)
    assert check_budget(hook, SEEDANCE_1_PRO_FAST_T2V_MODEL_ID, {"text": "A drone"}, 0.2).usd == 0.2


def test_sparse_body_is_priced_at_the_documented_default(hook: SeedanceHook) -> None:
    body = validate_request_body(SEEDANCE_2_PRO_MODEL_ID, {"prompt": "Dance"})
    assert body == {"prompt": "Dance"}
    estimate = check_budget(hook, SEEDANCE_2_PRO_MODEL_ID, body, 5)
    assert estimate.usd == 0.6  # 0.12 USD/second x 5 s
    assert "default duration" in estimate.basis


def test_pricing_endpoint_absent_allows_with_a_warning(
    hook: SeedanceHook, emulator: SeedanceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.state.pricing_enabled = False
    with caplog.at_level(logging.WARNING, logger="airflow_provider_seedance.cost"):
        estimate = check_budget(hook, SEED, seed_body(12), 0.01)
    assert estimate.usd is None
    assert "could not be read" in estimate.reason
    assert "404" in estimate.reason
    assert "NOT enforced" in caplog.text
    assert "on_unknown='allow'" in caplog.text
    assert emulator.state.count("model") == 1, "a 404 is not retried"
    assert emulator.submits() == []


def test_pricing_endpoint_absent_fails_when_asked(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.state.pricing_enabled = False
    with pytest.raises(SeedanceCostLimitError) as info:
        check_budget(hook, SEED, seed_body(5), 10, on_unknown="fail")
    message = str(info.value)
    assert "Cannot estimate the price" in message
    assert "on_unknown='fail'" in message
    assert "Nothing was submitted" in message
    assert emulator.submits() == []


def test_pricing_endpoint_failing_is_retried_then_unknown(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="model", status_code=503, times=None))
    estimate = check_budget(hook, SEED, seed_body(5), 10)
    assert estimate.usd is None
    assert "503" in estimate.reason
    assert emulator.state.count("model") == 4  # the first try and the connection's 3 retries


def test_transient_pricing_error_is_retried_to_an_estimate(
    hook: SeedanceHook, emulator: SeedanceEmulator
) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="model", status_code=429, retry_after=0))
    assert check_budget(hook, SEED, seed_body(5), 10).usd == 0.3
    assert emulator.state.count("model") == 2


def test_malformed_pricing_answer_is_unknown(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    emulator.add_fault(Fault(kind="malformed_json", endpoint="model", times=None))
    assert check_budget(hook, SEED, seed_body(5), 10).usd is None


@pytest.mark.parametrize(
    ("price", "unit", "reason"),
    [
        (None, "second", "gives no base_price_usd"),
        (0.01, "token", "a unit this provider cannot estimate"),
    ],
)
def test_unusable_catalog_entries(
    hook: SeedanceHook, emulator: SeedanceEmulator, price: float | None, unit: str, reason: str
) -> None:
    emulator.state.register_model("vendor/custom-video", base_price_usd=price, price_unit=unit)
    estimate = check_budget(hook, "vendor/custom-video", {"duration": 5}, 1)
    assert reason in estimate.reason
    with pytest.raises(SeedanceCostLimitError, match=reason):
        check_budget(hook, "vendor/custom-video", {"duration": 5}, 1, on_unknown="fail")


def test_per_second_model_without_duration_or_default(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    model_id = SEEDANCE_2_5_T2V_MODEL_IDS["4k"]
    with pytest.raises(SeedanceCostLimitError, match="set 'duration' in the input"):
        check_budget(hook, model_id, {"prompt": "p"}, 1, on_unknown="fail")
    assert check_budget(hook, model_id, {"prompt": "p", "duration": 4}, 2).usd == 1.6


def test_no_budget_means_no_http_call(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    estimate = check_budget(hook, SEED, seed_body(12), None)
    assert estimate.usd is None
    assert "no max_cost_usd" in estimate.reason
    assert emulator.state.count() == 0


@pytest.mark.parametrize("budget", [-1, "lots", True, float("nan"), float("inf"), [1]])
def test_bad_budget_is_a_configuration_error(
    hook: SeedanceHook, emulator: SeedanceEmulator, budget: object
) -> None:
    with pytest.raises(SeedanceConfigurationError, match="max_cost_usd must be a non-negative number"):
        check_budget(hook, SEED, seed_body(5), budget)  # type: ignore[arg-type]
    assert emulator.state.count() == 0


def test_budget_from_a_rendered_template(hook: SeedanceHook) -> None:
    assert check_budget(hook, SEED, seed_body(5), "0.30").usd == 0.3  # type: ignore[arg-type]


def test_bad_on_unknown_is_a_configuration_error(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    with pytest.raises(SeedanceConfigurationError, match="on_unknown must be 'allow' or 'fail'"):
        check_budget(hook, SEED, seed_body(5), 1, on_unknown="maybe")  # type: ignore[arg-type]
    assert emulator.state.count() == 0


def test_malformed_model_id_is_an_input_error(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    with pytest.raises(SeedanceInputError):
        check_budget(hook, "../../etc", {}, 1)
    assert emulator.state.count() == 0


def test_estimate_matches_the_billed_cost(hook: SeedanceHook, emulator: SeedanceEmulator) -> None:
    body = seed_body(8)
    estimate = check_budget(hook, SEED, body, 1.0)
    request_id = hook.submit(SEED, body).request_id
    deadline = time.monotonic() + 10
    while hook.get_status(request_id).state.is_active():
        assert time.monotonic() < deadline, "the emulated run did not finish"
        time.sleep(0.1)
    result = hook.get_result(request_id, include_cost=True)
    assert result.cost == estimate.usd == 0.48


# ---------------------------------------------------------------------------------------------------------
# The generation operators' cost guard and billed cost
# ---------------------------------------------------------------------------------------------------------


def test_defaults_and_bad_on_unknown_cost() -> None:
    op = i2v()
    assert (op.max_cost_usd, op.on_unknown_cost, op.check_image) == (None, "allow", False)
    assert SeedanceSubmitOperator(task_id="t", model_id=MODEL, input={}).validate_input is False
    with pytest.raises(SeedanceConfigurationError, match="on_unknown_cost"):
        i2v(on_unknown_cost="maybe")


def test_over_budget_fails_before_any_submit(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    op = i2v(max_cost_usd=0.25)
    with pytest.raises(SeedanceCostLimitError, match=r"0\.3 USD.*max_cost_usd=0\.25"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 0
    assert emulator.state.count("model") == 1


@pytest.mark.parametrize("on_unknown", ["allow", "fail"])
def test_another_models_price_is_never_used_for_the_budget(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, on_unknown: str
) -> None:
    # A cache answering the catalog call with a cheaper model's entry must not let a 0.3 USD video through
    # a 0.25 USD budget: the answer is refused, so the price is unknown and on_unknown_cost decides.
    cheap = {"model_id": "bytedance/seedance-1-0/lite/image-to-video", "base_price_usd": 0.001}
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="model", body=cheap, times=None))
    op = i2v(max_cost_usd=0.25, on_unknown_cost=on_unknown)
    if on_unknown == "fail":
        with pytest.raises(SeedanceCostLimitError, match="another model's answer is never used"):
            op.execute(make_context(store=FakeTaskStateStore()))
        assert emulator.state.count("submit") == 0
    else:
        op.execute(make_context(store=FakeTaskStateStore()))
        assert "NOT enforced" in logs.text()
        assert "another model's answer is never used" in logs.text()
    assert emulator.state.count("model") == 4  # retried like any garbled answer (conn_json: 3 retries)


def test_under_budget_submits_once_and_returns_the_billed_cost(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    result = i2v(max_cost_usd=ESTIMATE_5S).execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 1
    assert result["status"] == "succeeded"
    assert result["cost"] == billed_cost(result["request_id"]) == pytest.approx(ESTIMATE_5S)
    assert logs.lines(f"Seedance request {result['request_id']} cost {result['cost']} USD")


def test_the_billed_cost_is_returned_without_a_budget(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0, cost_usd=0.42))
    result = i2v().execute(make_context(store=FakeTaskStateStore()))
    assert result["cost"] == billed_cost(result["request_id"]) == 0.42
    assert emulator.state.count("model") == 0  # no budget: no catalog call


@pytest.mark.parametrize("on_unknown", ["allow", "fail"])
def test_pricing_endpoint_absent(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, on_unknown: str
) -> None:
    emulator.state.pricing_enabled = False
    op = i2v(max_cost_usd=0.01, on_unknown_cost=on_unknown)
    if on_unknown == "fail":
        with pytest.raises(SeedanceCostLimitError, match="on_unknown='fail'"):
            op.execute(make_context(store=FakeTaskStateStore()))
        assert emulator.state.count("submit") == 0
    else:
        result = op.execute(make_context(store=FakeTaskStateStore()))
        assert result["status"] == "succeeded"
        assert emulator.state.count("submit") == 1
        assert "NOT enforced" in logs.text()


def test_reattach_does_not_price_or_submit_again(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    hook = SeedanceHook()
    try:
        request_id = hook.submit(MODEL, BODY.to_request_body()).request_id
    finally:
        hook.close()
    body = BODY.to_request_body()
    store = FakeTaskStateStore(
        values={
            STATE_KEY: {
                "request_id": request_id,
                "model_id": MODEL,
                "input_sha256": input_fingerprint(MODEL, body),
            }
        }
    )
    # A budget the request would now fail, and an image check that would fail: neither runs on a re-attach.
    op = i2v(max_cost_usd=0.01, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(FakeTaskInstance(try_number=2), store))
    assert deferred.value.trigger.request_id == request_id
    assert emulator.state.count("model") == 0
    assert emulator.state.count("submit") == 1
