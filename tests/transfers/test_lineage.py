"""Issue 8 in the transfer: OpenLineage facets, Asset event metadata, and the example DAGs parsing offline."""

from __future__ import annotations

import hashlib
import importlib.util
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_provider_seedance.exceptions import SeedanceConfigurationError
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID, ResultResponse
from airflow_provider_seedance.testing import SeedanceEmulator
from airflow_provider_seedance.transfers._base import request_info, uri_dataset
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests._support import FakeDataset, FakeOperatorLineage, FakeVersionFacet
from tests.transfers._support import BUCKET, FakeTI, finished_request

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"


@dataclass
class FakeOutletEvent:
    extra: dict[str, Any] = field(default_factory=dict)
    added: list[tuple[Asset, dict[str, Any]]] = field(default_factory=list)

    def add(self, asset: Asset, extra: dict[str, Any] | None = None) -> None:
        self.added.append((asset, dict(extra or {})))


class FakeOutletEvents:
    """``context["outlet_events"]``: an event per asset or alias (keyed by repr: 3.0's are unhashable)."""

    def __init__(self) -> None:
        self.events: dict[str, FakeOutletEvent] = {}

    def __getitem__(self, key: Any) -> FakeOutletEvent:
        return self.events.setdefault(repr(key), FakeOutletEvent())


def context() -> dict[str, Any]:
    ti = FakeTI()
    return {"ti": ti, "task_instance": ti, "outlet_events": FakeOutletEvents()}


# -- naming ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/videos/a.mp4", ("s3://bucket", "videos/a.mp4")),
        ("https://user:pw@cdn.example.com:8443/v/1.mp4?sig=x", ("https://cdn.example.com:8443", "/v/1.mp4")),
        ("gs://b/k", ("gs://b", "k")),
        ("file:///tmp/x.mp4", ("file", "/tmp/x.mp4")),
        ("not a uri", ("", "")),
    ],
)
def test_uri_dataset(uri: str, expected: tuple[str, str]) -> None:
    assert uri_dataset(uri) == expected


def test_request_info_reads_optional_model_and_duration() -> None:
    bare = ResultResponse.model_validate({"status": "succeeded", "output": {"video": "https://x/v.mp4"}})
    assert request_info("r1", bare) == {"request_id": "r1"}
    rich = ResultResponse.model_validate(
        {"status": "succeeded", "model_id": "bytedance/seedance-v2/pro", "input": {"duration": 8}}
    )
    assert request_info("r2", rich) == {
        "request_id": "r2",
        "model_id": "bytedance/seedance-v2/pro",
        "duration": 8,
    }


# -- Asset events ------------------------------------------------------------------------------------------


def test_asset_event_extra(emulator: SeedanceEmulator, seedance_conn: str, s3: Any) -> None:
    request_id = finished_request(emulator, num_videos=2)
    asset, alias = Asset(f"s3://{BUCKET}/assets/"), AssetAlias("seedance-assets-test")
    op = SeedanceToS3Operator(
        task_id="store",
        request_id=request_id,
        dest_key=f"s3://{BUCKET}/assets/{request_id}-{{index}}.mp4",
        outlets=[asset, alias],
        asset_extra={"model_id": SEEDANCE_1_5_PRO_I2V_MODEL_ID, "duration": 5, "uris": "not replaced"},
    )
    ctx = context()
    uris = op.execute(ctx)

    with httpx.Client() as http:
        bodies = [http.get(f"{emulator.base_url}/files/{request_id}/{n}.mp4").content for n in range(2)]
    digests = [hashlib.sha256(body).hexdigest() for body in bodies]
    extra = ctx["outlet_events"][asset].extra
    assert extra["request_id"] == request_id
    assert extra["model_id"] == SEEDANCE_1_5_PRO_I2V_MODEL_ID
    assert extra["duration"] == 5
    assert extra["uris"] == uris
    assert extra["sha256"] == digests
    assert extra["sizes"] == [len(body) for body in bodies]
    assert [item["uri"] for item in extra["objects"]] == uris
    assert [item["sha256"] for item in extra["objects"]] == digests

    added = ctx["outlet_events"][alias].added
    assert [a.uri for a, _ in added] == uris
    for index, (_, per_file) in enumerate(added):
        assert per_file["uri"] == uris[index]
        assert per_file["sha256"] == digests[index]
        assert per_file["size"] == len(bodies[index])
        assert per_file["index"] == index
        assert per_file["request_id"] == request_id
        assert per_file["model_id"] == SEEDANCE_1_5_PRO_I2V_MODEL_ID
        assert per_file["duration"] == 5


def test_asset_event_extra_of_a_multipart_copy(emulator: SeedanceEmulator, s3: Any) -> None:
    """A file larger than one part has no sha256 metadata: its SHA-256 is in XCom and the Asset event."""
    size = 12 * 1024 * 1024 + 5
    url = emulator.url(f"/files/generated/{size}.mp4")
    asset, alias = Asset(f"s3://{BUCKET}/big/"), AssetAlias("seedance-big-test")
    op = SeedanceToS3Operator(
        task_id="store", source_urls=url, dest_key=f"s3://{BUCKET}/big/clip.mp4", outlets=[asset, alias]
    )
    ctx = context()
    op.execute(ctx)
    with httpx.Client() as http:
        digest = hashlib.sha256(http.get(url).content).hexdigest()
    assert "sha256" not in s3.head_object(Bucket=BUCKET, Key="big/clip.mp4")["Metadata"]
    assert ctx["ti"].xcom["objects"][0]["sha256"] == digest
    assert ctx["outlet_events"][asset].extra["sha256"] == [digest]
    assert ctx["outlet_events"][asset].extra["objects"][0]["sha256"] == digest
    [(_, per_file)] = ctx["outlet_events"][alias].added
    assert (per_file["sha256"], per_file["size"]) == (digest, size)


def test_asset_extra_must_be_a_mapping(emulator: SeedanceEmulator, seedance_conn: str, s3: Any) -> None:
    with pytest.raises(SeedanceConfigurationError, match="asset_extra"):
        SeedanceToS3Operator(task_id="t", source_urls="https://x/v.mp4", dest_key="s3://b/k", asset_extra=[1])
    op = SeedanceToS3Operator(
        task_id="t",
        source_urls=emulator.url("/files/generated/64.mp4"),
        dest_key="s3://b/k",
        asset_extra="{x",
    )
    with pytest.raises(SeedanceConfigurationError, match="asset_extra"):
        op.execute(context())
    assert emulator.state.count("download") == 0


def test_asset_extra_is_templated() -> None:
    assert "asset_extra" in SeedanceToS3Operator.template_fields


# -- OpenLineage -------------------------------------------------------------------------------------------


def test_lineage_is_skipped_without_the_openlineage_provider(
    emulator: SeedanceEmulator, seedance_conn: str, s3: Any
) -> None:
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OpenLineage provider is installed")
    op = SeedanceToS3Operator(
        task_id="t", source_urls=emulator.url("/files/generated/64.mp4"), dest_key=f"s3://{BUCKET}/l.mp4"
    )
    op.execute(context())
    assert op.get_openlineage_facets_on_complete(None) is None


def test_lineage_facets(
    emulator: SeedanceEmulator, seedance_conn: str, s3: Any, fake_openlineage: None
) -> None:
    request_id = finished_request(emulator, num_videos=2)
    op = SeedanceToS3Operator(
        task_id="store",
        request_id=request_id,
        dest_bucket=BUCKET,
        dest_key=f"lineage/{request_id}/{{index}}.mp4",
    )
    assert op.get_openlineage_facets_on_complete(None) == FakeOperatorLineage()  # nothing copied yet
    op.execute(context())
    lineage = op.get_openlineage_facets_on_complete(None)
    namespace = emulator.base_url.rstrip("/")
    assert lineage.inputs == [FakeDataset(namespace, f"/files/{request_id}/{n}.mp4") for n in range(2)]
    # Each output carries its copy's SHA-256 as its dataset version.
    digests = [copied.sha256 for copied in op._copied]
    assert lineage.outputs == [
        FakeDataset(
            f"s3://{BUCKET}",
            f"lineage/{request_id}/{n}.mp4",
            {"version": FakeVersionFacet(datasetVersion=digests[n])},
        )
        for n in range(2)
    ]
    with httpx.Client() as http:
        served = [http.get(f"{emulator.base_url}/files/{request_id}/{n}.mp4").content for n in range(2)]
    assert digests == [hashlib.sha256(body).hexdigest() for body in served]


# -- example DAGs ------------------------------------------------------------------------------------------


def load_example(name: str) -> types.ModuleType:
    path = EXAMPLE_DAGS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dags_of(module: types.ModuleType) -> dict[str, Any]:
    from airflow.sdk import DAG

    return {value.dag_id: value for value in vars(module).values() if isinstance(value, DAG)}


def test_example_assets_dags_parse_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: pytest.fail("network call at parse time"))
    dags = dags_of(load_example("example_seedance_assets"))
    assert set(dags) == {"example_seedance_assets_producer", "example_seedance_assets_consumer"}
    producer, consumer = dags["example_seedance_assets_producer"], dags["example_seedance_assets_consumer"]
    store = producer.get_task("store")
    assert isinstance(store, SeedanceToS3Operator)
    [outlet] = store.outlets
    assert isinstance(outlet, Asset)
    assert outlet in consumer.timetable.asset_condition.objects


def test_example_assets_consumer_reads_the_triggering_event(capsys: pytest.CaptureFixture[str]) -> None:
    module = load_example("example_seedance_assets")
    event = types.SimpleNamespace(
        extra={"request_id": "req-1", "sha256": ["ab" * 32], "uris": ["s3://b/k.mp4"], "model_id": "m"}
    )
    # Keyed by name: Airflow 3.0's Assets are unhashable, and the function reads only the values.
    module.describe_arrivals({module.VIDEOS.name: [event]})
    out = capsys.readouterr().out
    assert "req-1" in out
    assert "ab" * 32 in out
    assert "s3://b/k.mp4" in out


def test_example_cost_guard_dag_parses_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: pytest.fail("network call at parse time"))
    [dag] = dags_of(load_example("example_seedance_cost_guard")).values()
    generate = dag.get_task("generate")
    assert generate.max_cost_usd is not None
    assert generate.check_image is True
