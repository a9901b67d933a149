"""Issue 8 in the operators: cost guard, billed cost, opt-in image checks, catalog presets, OpenLineage."""

from __future__ import annotations

import base64
import io
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_seedance.catalog import SEEDANCE_2_PRO_MODEL_ID, Seedance2ProInput
from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceCostLimitError,
    SeedanceInputError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SeedanceImageToVideoInput
from airflow_provider_seedance.operators._request_store import STATE_KEY, input_fingerprint
from airflow_provider_seedance.operators.seedance import (
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
    SeedanceV2ProOperator,
)
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from tests.operators._dag_support import (
    IMAGE,
    MODEL,
    CapturedLogs,
    FakeTaskInstance,
    FakeTaskStateStore,
    make_context,
)

PROMPT = "A paper boat drifts down a rainy street"
BODY = SeedanceImageToVideoInput.validate_input({"prompt": PROMPT, "first_frame_image_url": IMAGE})
STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")
# The emulator's catalog prices Seedance 1.5 Pro at 0.06 USD/second: a default 5 s video is 0.30 USD.
ESTIMATE_5S = 0.3


def i2v(**kwargs: Any) -> SeedanceImageToVideoOperator:
    kwargs = {"task_id": "generate", "prompt": PROMPT, "first_frame_image_url": IMAGE, **kwargs}
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return SeedanceImageToVideoOperator(**kwargs)


def png_data_uri(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def billed_cost(request_id: str) -> float | None:
    hook = SeedanceHook()
    try:
        return hook.get_result(request_id, include_cost=True).cost
    finally:
        hook.close()


# -- construction ------------------------------------------------------------------------------------------


def test_defaults_and_bad_on_unknown_cost() -> None:
    op = i2v()
    assert (op.max_cost_usd, op.on_unknown_cost, op.check_image) == (None, "allow", False)
    assert SeedanceSubmitOperator(task_id="t", model_id=MODEL, input={}).validate_input is False
    with pytest.raises(SeedanceConfigurationError, match="on_unknown_cost"):
        i2v(on_unknown_cost="maybe")


# -- cost guard --------------------------------------------------------------------------------------------


def test_over_budget_fails_before_any_submit(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    op = i2v(max_cost_usd=0.25)
    with pytest.raises(SeedanceCostLimitError, match=r"0\.3 USD.*max_cost_usd=0\.25"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 0
    assert emulator.state.count("model") == 1


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


# -- image checks ------------------------------------------------------------------------------------------


def test_check_image_rejects_a_small_image_before_pricing_or_submitting(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    op = i2v(first_frame_image_url=png_data_uri(100, 100), check_image=True, max_cost_usd=10)
    with pytest.raises(SeedanceInputError, match=r"first_frame_image_url: image width .*got 100 px"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []


def test_check_image_passes_a_good_image(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    op = i2v(first_frame_image_url=png_data_uri(640, 360), check_image=True, max_cost_usd=10)
    result = op.execute(make_context(store=FakeTaskStateStore()))
    assert result["status"] == "succeeded"
    assert emulator.state.count("submit") == 1
    assert emulator.state.count("model") == 1


def test_check_image_is_off_by_default(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    result = i2v(first_frame_image_url=png_data_uri(100, 100)).execute(
        make_context(store=FakeTaskStateStore())
    )
    assert result["status"] == "succeeded"


# -- catalog validation and the Seedance 2.0 Pro preset ---------------------------------------------------


def test_submit_operator_validates_with_the_catalog_when_asked(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    bad = {"prompt": "A fox", "ratio": "16:9"}
    op = SeedanceSubmitOperator(
        task_id="generate", model_id=SEEDANCE_2_PRO_MODEL_ID, input=bad, validate_input=True
    )
    with pytest.raises(SeedanceInputError, match="ratio: unknown field"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []

    emulator.set_plan(STUCK)
    op = SeedanceSubmitOperator(
        task_id="generate",
        model_id=SEEDANCE_2_PRO_MODEL_ID,
        input={"prompt": "A fox", "duration": "8"},
        validate_input=True,
        wait_for_completion=False,
    )
    op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests("submit")[-1].body == {"prompt": "A fox", "duration": 8}


def test_submit_operator_sends_an_unknown_model_input_as_written(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.state.register_model("someone/else/model", base_price_usd=0.5, price_unit="output")
    emulator.set_plan(STUCK)
    op = SeedanceSubmitOperator(
        task_id="generate",
        model_id="someone/else/model",
        input={"anything": [1, 2]},
        validate_input=True,
        wait_for_completion=False,
        max_cost_usd=0.5,
    )
    assert op.execute(make_context(store=FakeTaskStateStore()))["status"] == "submitted"
    assert emulator.state.requests("submit")[-1].body == {"anything": [1, 2]}


def test_v2_pro_template_fields_cover_every_input() -> None:
    assert set(SeedanceV2ProOperator.template_fields) == {
        "model_id",
        "seedance_conn_id",
        *Seedance2ProInput.model_fields,
    }


def test_v2_pro_sends_only_the_fields_set(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    op = SeedanceV2ProOperator(
        task_id="generate",
        prompt="A fox runs",
        image_url=IMAGE,
        duration="8",
        wait_for_completion=False,
        max_cost_usd=1.0,  # 0.12 USD/s x 8 s = 0.96
    )
    op.execute(make_context(store=FakeTaskStateStore()))
    [submit] = emulator.state.requests("submit")
    assert submit.model_id == SEEDANCE_2_PRO_MODEL_ID
    assert submit.body == {"prompt": "A fox runs", "image_url": [IMAGE], "duration": 8}


def test_v2_pro_rejects_bad_input_and_over_budget(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    with pytest.raises(SeedanceInputError, match="duration"):
        SeedanceV2ProOperator(task_id="g", prompt="x", duration=20).execute(make_context())
    op = SeedanceV2ProOperator(task_id="g", prompt="x", duration=15, max_cost_usd=1.5)
    with pytest.raises(SeedanceCostLimitError, match=r"1\.8 USD"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 0


# -- OpenLineage -------------------------------------------------------------------------------------------


@dataclass
class FakeDataset:
    namespace: str
    name: str


@dataclass
class FakeExternalQueryRunFacet:
    externalQueryId: str
    source: str


@dataclass
class FakeOperatorLineage:
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def fake_openlineage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for the OpenLineage provider and client classes (neither is installed in the test venv)."""
    import airflow.providers.common.compat.openlineage.facet as facet

    extractors = types.ModuleType("airflow.providers.openlineage.extractors")
    extractors.OperatorLineage = FakeOperatorLineage  # type: ignore[attr-defined]
    package = types.ModuleType("airflow.providers.openlineage")
    package.extractors = extractors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", package)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", extractors)
    monkeypatch.setattr(facet, "Dataset", FakeDataset)
    monkeypatch.setattr(facet, "ExternalQueryRunFacet", FakeExternalQueryRunFacet)


def test_lineage_is_skipped_without_the_openlineage_provider(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    pytest.importorskip("airflow.providers.common.compat.openlineage.facet")
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OpenLineage provider is installed")
    op = i2v()
    assert op.get_openlineage_facets_on_complete(None) is None
    op.execute(make_context(store=FakeTaskStateStore()))
    assert op.get_openlineage_facets_on_complete(None) is None


def test_lineage_facets(emulator: SeedanceEmulator, seedance_conn: str, fake_openlineage: None) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0, num_videos=2))
    image = "https://images.example.com:8443/frames/first.png?X-Amz-Signature=secret"
    op = i2v(first_frame_image_url=image)
    assert op.get_openlineage_facets_on_complete(None) == FakeOperatorLineage()  # nothing ran yet
    result = op.execute(make_context(store=FakeTaskStateStore()))
    lineage = op.get_openlineage_facets_on_complete(None)

    assert lineage.inputs == [FakeDataset("https://images.example.com:8443", "/frames/first.png")]
    namespace = emulator.base_url.rstrip("/")
    rid = result["request_id"]
    assert lineage.outputs == [FakeDataset(namespace, f"/files/{rid}/{index}.mp4") for index in range(2)]
    assert lineage.run_facets == {"externalQuery": FakeExternalQueryRunFacet(rid, namespace)}


def test_lineage_leaves_data_uris_out(
    emulator: SeedanceEmulator, seedance_conn: str, fake_openlineage: None
) -> None:
    op = i2v(first_frame_image_url=png_data_uri(400, 400))
    op.execute(make_context(store=FakeTaskStateStore()))
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == []
    assert len(lineage.outputs) == 1
