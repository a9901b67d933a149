"""Driving the image-to-video operator directly against the emulator: shared by the feature test modules."""

from __future__ import annotations

import base64
import io
from typing import Any

from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SeedanceImageToVideoInput
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import JobPlan
from tests.operators._dag_support import IMAGE

PROMPT = "A paper boat drifts down a rainy street"
BODY = SeedanceImageToVideoInput.validate_input({"prompt": PROMPT, "first_frame_image_url": IMAGE})
STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")
# The emulator's catalog prices Seedance 1.5 Pro at 0.06 USD/second: a default 5 s video is 0.30 USD.
ESTIMATE_5S = 0.3


def i2v(**kwargs: Any) -> SeedanceImageToVideoOperator:
    """Return the image-to-video operator on :data:`PROMPT`, polling fast in the worker unless told."""
    kwargs = {"task_id": "generate", "prompt": PROMPT, "first_frame_image_url": IMAGE, **kwargs}
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return SeedanceImageToVideoOperator(**kwargs)


def png_data_uri(width: int, height: int) -> str:
    """Return a ``data:`` URI of a plain RGB PNG of the given size."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def billed_cost(request_id: str) -> float | None:
    """Return the cost the API reports for a request."""
    hook = SeedanceHook()
    try:
        return hook.get_result(request_id, include_cost=True).cost
    finally:
        hook.close()
