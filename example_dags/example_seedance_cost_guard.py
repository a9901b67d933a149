"""Cost guard and image checks: refuse to pay for a generation that is over budget or has a bad image.

Before submitting, ``max_cost_usd`` makes the operator estimate the price from the model catalog
(``base_price_usd`` x ``price_unit``, e.g. 0.06 USD per second x 8 s) and fail the task, without retries and
without submitting, when the estimate is above the budget. ``on_unknown_cost="fail"`` also refuses when no
estimate can be made (the catalog endpoint is undocumented and may be absent); the default, ``"allow"``,
submits with a warning instead.

``check_image=True`` downloads the first-frame image (streamed, capped at 30 MB, without credentials) and
checks the model page's rules (300-6000 px sides, aspect ratio 0.4-2.5, < 30 MB) before anything is paid
for. It needs Pillow: ``pip install 'airflow-provider-seedance[images]'``.

The billed cost (``/result?include_cost=true``) is logged and returned as ``cost``. Parsing the file makes no
network call.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator, SeedanceV2ProOperator

IMAGE_URL = "https://playgrounds-storage-public.runcomfy.net/tools/7272/media-files/input-1-1.png"

with DAG(
    dag_id="example_seedance_cost_guard",
    description="Seedance generations with a budget (max_cost_usd) and a checked first-frame image.",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "seedance", "cost"],
    params={
        "image_url": Param(IMAGE_URL, type="string", description="Public URL of the first frame."),
        "duration": Param(8, type="integer", minimum=4, maximum=12, description="Seconds of video."),
    },
) as dag:
    # 0.06 USD/second x 8 s = 0.48 USD: within 0.50. Ask for 12 s and the task fails before submitting.
    generate = SeedanceImageToVideoOperator(
        task_id="generate",
        prompt="Waves roll onto a pebble beach at sunset",
        first_frame_image_url="{{ params.image_url }}",
        duration="{{ params.duration }}",
        max_cost_usd=0.50,
        on_unknown_cost="fail",
        check_image=True,
    )

    # Seedance 2.0 Pro, typed: only the fields given are sent; 0.12 USD/second x 6 s = 0.72 USD.
    remix = SeedanceV2ProOperator(
        task_id="remix",
        prompt="The same beach at night, lit by a lighthouse beam",
        image_url=["{{ params.image_url }}"],
        duration=6,
        resolution="720p",
        max_cost_usd=1.00,
    )
