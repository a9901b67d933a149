"""Example: turn a still image into a short video with Seedance 1.5 Pro, without holding a worker slot.

Set up a ``seedance`` connection named ``seedance_default`` first (the RunComfy API token as password),
e.g. ``AIRFLOW_CONN_SEEDANCE_DEFAULT='{"conn_type": "seedance", "password": "<token>"}'``, or point it at
the local emulator (``seedance-emulator --port 8765``) with ``"host": "http://127.0.0.1:8765"``.

Parsing this file makes no network call and needs no connection.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator

with DAG(
    dag_id="example_seedance_image_to_video",
    description="Generate a 5-second video from a first frame and a prompt with Seedance 1.5 Pro.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "seedance", "video"],
    params={
        "prompt": Param(
            "A paper boat drifts down a rain-soaked street at dusk, neon reflections rippling",
            type="string",
            minLength=1,
        ),
        "image_url": Param("https://example.com/paper-boat.png", type="string", format="uri"),
    },
) as dag:
    # Deferrable by default: after submitting, the wait runs in the triggerer. A retry re-attaches to the
    # request the first try paid for instead of submitting (and paying for) a second one.
    generate = SeedanceImageToVideoOperator(
        task_id="generate_video",
        prompt="{{ params.prompt }}",
        first_frame_image_url="{{ params.image_url }}",
        resolution="720p",
        ratio="16:9",
        duration=5,
        generate_audio=True,
        camera_fixed=False,
        poll_interval=5,
        timeout=1800,
        retries=2,
    )

    @task
    def report(result: dict) -> str:
        """Log where the video is; its URL is short-lived, so copy it (see SeedanceToS3Operator) promptly."""
        print(f"Video of request {result['request_id']}: {result['video_url']} (cost: {result['cost']})")
        return result["video_url"]

    report(generate.output)
