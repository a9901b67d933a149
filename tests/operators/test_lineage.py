"""The generation operators' OpenLineage facets: input image, output videos, the request as external query."""

from __future__ import annotations

import pytest

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from tests._generation import i2v, png_data_uri
from tests._support import FakeDataset, FakeExternalQueryRunFacet, FakeOperatorLineage
from tests.operators._dag_support import FakeTaskStateStore, make_context


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
