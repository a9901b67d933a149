"""Assets: a producer DAG lands Seedance videos in S3, a consumer DAG learns which video arrived.

``example_seedance_assets_producer`` generates a video and copies it to S3 with ``outlets=[VIDEOS]``. The
copy attaches metadata to the Asset event: ``request_id``, ``model_id`` and ``duration`` of the generation,
and per file its ``uri``, ``sha256`` and ``size`` (keys ``uris``, ``sha256``, ``sizes`` and ``objects``).

``example_seedance_assets_consumer`` is scheduled on that asset: each new video starts a run, whose
``triggering_asset_events`` say which request produced which object, with its checksum, so the consumer can
verify or index it without asking the API.

Configuration: connections ``seedance_default`` and ``aws_default`` (optional); environment variable
``SEEDANCE_EXAMPLE_BUCKET`` (default ``seedance-demo``). Parsing the file makes no network call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, task

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

BUCKET = os.environ.get("SEEDANCE_EXAMPLE_BUCKET", "").strip() or "seedance-demo"
"""The destination bucket (read when the file is parsed: the asset URI is fixed then)."""

VIDEOS = Asset(name="seedance_asset_videos", uri=f"s3://{BUCKET}/seedance/assets/")
"""Updated each time the producer lands a video."""

IMAGE_URL = "https://playgrounds-storage-public.runcomfy.net/tools/7272/media-files/input-1-1.png"


def describe_arrivals(triggering_asset_events: Mapping[Any, Sequence[Any]]) -> list[dict[str, Any]]:
    """
    Print (and return) which videos arrived: request id, model, duration, URI and sha256 of each.

    :param triggering_asset_events: the run's ``triggering_asset_events`` (asset -> its events).
    """
    arrivals: list[dict[str, Any]] = []
    for events in triggering_asset_events.values():
        for event in events:
            extra = dict(getattr(event, "extra", None) or {})
            for uri, sha256 in zip(extra.get("uris", []), extra.get("sha256", []), strict=False):
                arrival = {
                    "request_id": extra.get("request_id"),
                    "model_id": extra.get("model_id"),
                    "duration": extra.get("duration"),
                    "uri": uri,
                    "sha256": sha256,
                }
                print(
                    f"New Seedance video {uri} from request {arrival['request_id']} "
                    f"({arrival['model_id']}, {arrival['duration']} s), sha256 {sha256}"
                )
                arrivals.append(arrival)
    return arrivals


with DAG(
    dag_id="example_seedance_assets_producer",
    description="Generate a Seedance video and land it in S3, emitting an Asset event with its metadata.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "seedance", "assets"],
) as producer:
    generate = SeedanceImageToVideoOperator(
        task_id="generate",
        prompt="A paper lantern rises slowly into a starry night sky",
        first_frame_image_url=IMAGE_URL,
        duration=5,
    )
    store = SeedanceToS3Operator(
        task_id="store",
        request_id="{{ ti.xcom_pull('generate')['request_id'] }}",
        dest_key=(
            f"s3://{BUCKET}/seedance/assets/{{{{ ti.xcom_pull('generate')['request_id'] }}}}-{{index}}.mp4"
        ),
        outlets=[VIDEOS],
        # The result of a request does not always say which model made it or how long it is: pass them on.
        asset_extra={"model_id": "{{ ti.xcom_pull('generate')['model_id'] }}", "duration": 5},
    )
    generate >> store


with DAG(
    dag_id="example_seedance_assets_consumer",
    description="Runs whenever a new Seedance video lands, and reports which one it was.",
    schedule=[VIDEOS],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "seedance", "assets"],
) as consumer:

    @task
    def which_video_arrived(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Read the Asset events that triggered this run."""
        return describe_arrivals(triggering_asset_events or {})

    which_video_arrived()
