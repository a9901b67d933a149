"""One success rule for generation, sensor, trigger and transfer: a /result of ``completed`` with an output.

The API's docs show ``completed`` for every finished run; a /result that says ``completed`` with an output
and no error is a success the generation task accepts and pays for, so the transfer must copy it too.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from airflow.sdk import DAG

from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.sensors.seedance import SeedanceRequestSensor
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests.operators._dag_support import (
    IMAGE,
    MODEL,
    START,
    image_to_video,
    make_context,
    run_dag,
    task_instances,
    unique_dag_id,
    xcom,
)
from tests.transfers._support import BUCKET, assert_nothing_left
from tests.transfers.conftest import MotoServer

COMPLETED = JobPlan(queue_seconds=0, run_seconds=0.1, succeeded_status_on_result_endpoint="completed")
"""A run whose /result says ``completed`` (with the output, no error) instead of ``succeeded``."""


def finished_request(emulator: SeedanceEmulator) -> str:
    emulator.set_plan(COMPLETED.model_copy(update={"run_seconds": 0}))
    hook = SeedanceHook()
    try:
        request_id = hook.submit(
            MODEL, {"prompt": "A heron lifts off", "first_frame_image_url": IMAGE}
        ).request_id
        result = hook.get_result(request_id)
        assert (result.status, result.succeeded) == ("completed", True)
        return request_id
    finally:
        hook.close()


def test_transfer_copies_a_request_whose_result_says_completed_with_output(
    emulator: SeedanceEmulator, seedance_conn: str, s3: Any
) -> None:
    request_id = finished_request(emulator)
    uris = SeedanceToS3Operator(
        task_id="store", request_id=request_id, dest_key=f"s3://{BUCKET}/{request_id}.mp4"
    ).execute(make_context())  # type: ignore[arg-type]

    assert uris == [f"s3://{BUCKET}/{request_id}.mp4"]
    with httpx.Client() as http:
        expected = http.get(f"{emulator.base_url}/files/{request_id}/0.mp4").content
    stored = s3.get_object(Bucket=BUCKET, Key=f"{request_id}.mp4")
    assert stored["Body"].read() == expected
    assert stored["Metadata"]["sha256"] == hashlib.sha256(expected).hexdigest()
    assert_nothing_left(s3, [f"{request_id}.mp4"])


@pytest.mark.usefixtures("airflow_db")
def test_generate_wait_and_store_agree_on_a_completed_result(
    emulator: SeedanceEmulator, seedance_conn: str, moto_server: MotoServer
) -> None:
    # The trigger (deferred generation), the sensor (poke) and the transfer each read the same /result.
    emulator.set_plan(COMPLETED)
    rid = "{{ ti.xcom_pull(task_ids='generate', key='request_id') }}"
    with DAG(unique_dag_id("seedance_completed"), schedule=None, start_date=START, catchup=False) as dag:
        generate = image_to_video("A heron lifts off a misty lake", deferrable=True, poll_interval=0.1)
        wait = SeedanceRequestSensor(task_id="wait", request_id=rid, deferrable=False, poll_interval=0.1)
        store = SeedanceToS3Operator(task_id="store", request_id=rid, dest_key=f"s3://{BUCKET}/completed.mp4")
        generate >> wait >> store
    dag_run = run_dag(dag)

    states = {task_id: str(ti.state) for (task_id, _), ti in task_instances(dag_run).items()}
    assert states == {"generate": "success", "wait": "success", "store": "success"}
    request_id = xcom(dag_run, "generate", "request_id")
    assert xcom(dag_run, "generate")["video_url"] == xcom(dag_run, "wait")["video_url"]
    assert xcom(dag_run, "store") == [f"s3://{BUCKET}/completed.mp4"]
    stored = moto_server.client.head_object(Bucket=BUCKET, Key="completed.mp4")
    assert stored["Metadata"]["seedance-request-id"] == request_id
    assert emulator.state.count("submit") == 1
