"""Whole DAGs through dag.test(): the transfer alone, and generate -> store chained by a templated id."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from airflow.sdk import DAG, Asset, AssetAlias

from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests.operators._dag_support import (
    START,
    image_to_video,
    run_dag,
    task_instances,
    unique_dag_id,
    xcom,
)
from tests.transfers._support import BUCKET, assert_nothing_left
from tests.transfers.conftest import MotoServer

pytestmark = pytest.mark.usefixtures("airflow_db")


def states(dag_run: Any) -> dict[str, str]:
    return {task_id: str(ti.state) for (task_id, _), ti in task_instances(dag_run).items()}


def asset_events(uri_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """Return (asset uri, extra) of every asset event whose asset URI starts with ``uri_prefix``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri.startswith(uri_prefix))
        ).all()
        return [(uri, dict(extra or {})) for uri, extra in rows]


def test_transfer_alone_with_templated_source(emulator: SeedanceEmulator, moto_server: MotoServer) -> None:
    outlet = Asset(f"s3://{BUCKET}/alone/")
    with DAG(unique_dag_id("seedance_store"), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceToS3Operator(
            task_id="store",
            source_urls="{{ params.urls }}",
            dest_key="s3://" + BUCKET + "/alone/{{ dag_run.dag_id }}-{index}.mp4",
            outlets=[outlet],
        )
    size = 9 * 1024 * 1024
    dag.params["urls"] = [
        emulator.url("/files/generated/2048.mp4"),
        emulator.url(f"/files/generated/{size}.mp4"),
    ]
    dag_run = run_dag(dag)

    assert states(dag_run) == {"store": "success"}
    keys = [f"alone/{dag.dag_id}-{n}.mp4" for n in range(2)]
    assert xcom(dag_run, "store") == [f"s3://{BUCKET}/{key}" for key in keys]
    objects = xcom(dag_run, "store", "objects")
    assert [item["size"] for item in objects] == [2048, size]
    assert_nothing_left(moto_server.client, keys)
    [(_, extra)] = asset_events(outlet.uri)
    assert extra["uris"] == [f"s3://{BUCKET}/{key}" for key in keys]
    assert extra["sha256"] == [item["sha256"] for item in objects]


def test_generate_then_store(emulator: SeedanceEmulator, seedance_conn: str, moto_server: MotoServer) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0.1, run_seconds=0.1, num_videos=2))
    alias = AssetAlias("seedance-new-videos")
    with DAG(unique_dag_id("seedance_generate_store"), schedule=None, start_date=START, catchup=False) as dag:
        generate = image_to_video(
            "A lighthouse beam sweeps across a stormy sea", deferrable=True, poll_interval=0.1
        )
        store = SeedanceToS3Operator(
            task_id="store",
            request_id="{{ ti.xcom_pull('generate')['request_id'] }}",
            dest_bucket=BUCKET,
            dest_key="videos/{{ ti.xcom_pull('generate')['request_id'] }}/clip-{index}.mp4",
            outlets=[alias],
        )
        generate >> store
    dag_run = run_dag(dag)

    assert states(dag_run) == {"generate": "success", "store": "success"}
    request_id = xcom(dag_run, "generate", "request_id")
    keys = [f"videos/{request_id}/clip-{n}.mp4" for n in range(2)]
    assert xcom(dag_run, "store") == [f"s3://{BUCKET}/{key}" for key in keys]
    with httpx.Client() as http:
        for index, key in enumerate(keys):
            expected = http.get(f"{emulator.base_url}/files/{request_id}/{index}.mp4").content
            answer = moto_server.client.get_object(Bucket=BUCKET, Key=key)
            assert answer["Body"].read() == expected
            assert answer["Metadata"]["sha256"] == hashlib.sha256(expected).hexdigest()
            assert answer["Metadata"]["seedance-request-id"] == request_id
    assert_nothing_left(moto_server.client, keys)
    # The alias produced one concrete asset event per video, for DAGs scheduled on new videos.
    events = asset_events(f"s3://{BUCKET}/videos/{request_id}/")
    assert sorted(uri for uri, _ in events) == [f"s3://{BUCKET}/{key}" for key in keys]
