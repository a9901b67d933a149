"""Flagship example: a still image and a prompt become a Seedance 1.5 Pro video, stored in S3.

``generate_video`` submits the request and defers: while the video is generated (tens of seconds to
minutes), the wait runs in the triggerer and no worker slot is held. ``store_video`` then streams the video
into S3 (verified by size and SHA-256) and updates the ``seedance_videos`` asset
(``s3://<bucket>/seedance/``), which DAGs scheduled on that asset react to.

Configuration, all optional:

* connections ``seedance_default`` (the RunComfy API token as password) and ``aws_default`` (without it,
  boto3's default credential chain is used);
* environment variable ``SEEDANCE_EXAMPLE_BUCKET``, read when the file is parsed (default
  ``seedance-demo``): the bucket the videos land in, and the URI of the asset;
* run ``conf`` / params: ``prompt``, ``image_url``, ``resolution``, ``ratio``, ``duration``, ``key_prefix``.

``python3 dev.py demo`` runs this DAG end to end on local stand-ins (see docs/quickstart.md). Parsing the
file makes no network call and needs no connection.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, Param

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator

DAG_ID = "example_seedance_to_s3"

BUCKET = os.environ.get("SEEDANCE_EXAMPLE_BUCKET", "").strip() or "seedance-demo"
"""The destination bucket; an environment variable because the asset URI is fixed when the file is parsed."""

KEY_PREFIX = "seedance/"
"""Every video lands under this prefix; the asset stands for the whole prefix."""

VIDEOS = Asset(name="seedance_videos", uri=f"s3://{BUCKET}/{KEY_PREFIX}", extra={"producer": DAG_ID})
"""Updated each time a video lands; schedule downstream DAGs on it (``Asset.ref(name="seedance_videos")``)."""

DEFAULT_IMAGE_URL = "https://playgrounds-storage-public.runcomfy.net/tools/7272/media-files/input-1-1.png"
"""The first frame of the model page's own example (a public image the real API accepts)."""

DEFAULT_PROMPT = (
    "A gentle breeze blows softly; the girl's long hair flutters naturally while the subway train moves "
    "rapidly with a low rumbling echo."
)

with DAG(
    dag_id=DAG_ID,
    description="Image + prompt -> Seedance 1.5 Pro video (deferrable) -> S3, updating an asset.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["example", "seedance", "video", "s3"],
    params={
        "prompt": Param(DEFAULT_PROMPT, type="string", minLength=1, description="What happens in the video."),
        "image_url": Param(DEFAULT_IMAGE_URL, type="string", description="Public URL of the first frame."),
        "resolution": Param("480p", enum=["480p", "720p", "1080p"]),
        "ratio": Param("adaptive", enum=["adaptive", "16:9", "4:3", "1:1", "3:4", "9:16", "21:9"]),
        "duration": Param(5, type="integer", minimum=4, maximum=12, description="Seconds of video."),
        "key_prefix": Param(
            KEY_PREFIX, type="string", pattern=f"^{KEY_PREFIX}", description=f"Must start with {KEY_PREFIX}."
        ),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    # While the video is generated, the wait runs in the triggerer: no worker slot is held. A retry
    # re-attaches to the request the first try submitted (and paid for) instead of submitting another.
    generate = SeedanceImageToVideoOperator(
        task_id="generate_video",
        prompt="{{ params.prompt }}",
        first_frame_image_url="{{ params.image_url }}",
        resolution="{{ params.resolution }}",
        ratio="{{ params.ratio }}",
        duration="{{ params.duration }}",
        generate_audio=True,
        camera_fixed=False,
        deferrable=True,
        poll_interval=2,
        timeout=1800,
    )

    # Output URLs are short-lived: copy the video at once. A retry finds the verified copy and skips it.
    store = SeedanceToS3Operator(
        task_id="store_video",
        request_id="{{ ti.xcom_pull(task_ids='generate_video', key='request_id') }}",
        dest_bucket=BUCKET,
        dest_key=(
            "{{ params.key_prefix }}{{ dag_run.run_after.strftime('%Y-%m-%d') }}/"
            "{{ ti.xcom_pull(task_ids='generate_video', key='request_id') }}-{index}.mp4"
        ),
        aws_conn_id="aws_default",
        outlets=[VIDEOS],
    )

    generate >> store
