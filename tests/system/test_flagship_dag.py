"""The flagship example DAG (``example_seedance_to_s3``): parses offline, is wired as documented, runs.

The heavy end-to-end runs (real scheduler and triggerer) are in test_demo.py; these tests are fast: a
``DagBag`` parse and one ``dag.test()`` against the emulator and an in-process moto S3.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import SeedanceEmulator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests._compat import dag_bag, store_serialized_dag
from tests.operators._dag_support import task_instances, xcom

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_seedance_to_s3.py"
DAG_ID = "example_seedance_to_s3"


def _parse(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("parsing the flagship DAG opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = dag_bag(EXAMPLE)
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_parses_offline_without_connections_and_is_wired_as_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEEDANCE_EXAMPLE_BUCKET", raising=False)

    dag = _parse(monkeypatch)

    generate = dag.get_task("generate_video")
    store = dag.get_task("store_video")
    assert isinstance(generate, SeedanceImageToVideoOperator)
    assert isinstance(store, SeedanceToS3Operator)
    assert generate.deferrable is True
    assert generate.retries == 2
    assert {t.task_id for t in generate.downstream_list} == {"store_video"}
    assert "xcom_pull(task_ids='generate_video', key='request_id')" in store.request_id
    assert store.dest_bucket == "seedance-demo"
    assert store.dest_key.endswith("-{index}.mp4")
    (asset,) = store.outlets
    assert asset.name == "seedance_videos"
    assert asset.uri.startswith("s3://seedance-demo/seedance")
    assert dag.params["resolution"] == "480p"


def test_bucket_comes_from_the_environment_at_parse_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDANCE_EXAMPLE_BUCKET", "my-video-bucket")

    dag = _parse(monkeypatch)

    store = dag.get_task("store_video")
    assert store.dest_bucket == "my-video-bucket"
    assert store.outlets[0].uri.startswith("s3://my-video-bucket/seedance")


def run_dag(dag: Any, run_conf: dict[str, Any]) -> Any:
    """Store ``dag`` as the dag-processor would (dag.test() needs it serialized), then run it with a conf."""
    store_serialized_dag(dag)
    return dag.test(run_conf=run_conf)


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process moto S3 with the demo's bucket; no aws_default connection (boto3's chain is used)."""
    import boto3
    from moto import mock_aws

    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    monkeypatch.delenv("SEEDANCE_EXAMPLE_BUCKET", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="seedance-demo")
        yield client


@pytest.mark.usefixtures("airflow_db")
def test_runs_generate_then_store_with_the_run_conf(
    emulator: SeedanceEmulator, seedance_conn: str, s3_bucket: Any
) -> None:
    dag = dag_bag(EXAMPLE).dags[DAG_ID]

    dag_run = run_dag(dag, run_conf={"prompt": "A lighthouse in a storm", "duration": 4})

    states = {task_id: str(ti.state) for (task_id, _), ti in task_instances(dag_run).items()}
    assert states == {"generate_video": "success", "store_video": "success"}
    (submit,) = emulator.submits()
    assert submit.body["prompt"] == "A lighthouse in a storm"
    assert submit.body["duration"] == 4
    assert submit.body["resolution"] == "480p"
    request_id = xcom(dag_run, "generate_video", "request_id")
    (uri,) = xcom(dag_run, "store_video")
    assert uri.startswith("s3://seedance-demo/seedance/")
    assert uri.endswith(f"/{request_id}-0.mp4")
    key = uri.removeprefix("s3://seedance-demo/")
    head = s3_bucket.head_object(Bucket="seedance-demo", Key=key)
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"]["sha256"]
