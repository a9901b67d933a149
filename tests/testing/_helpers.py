"""Constants and helpers shared by the emulator tests (fixtures live in conftest.py)."""

from __future__ import annotations

import httpx

TOKEN = "sk-emulator-test-token"
OTHER_TOKEN = "sk-another-account"
I2V = "bytedance/seedance-v1.5-pro/image-to-video"
I2V_INPUT = {"prompt": "A lighthouse at dusk", "first_frame_image_url": "https://example.com/first.png"}


class FakeClock:
    """A monotonic clock the test moves by hand, so timelines are exact and instant."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


def submit(client: httpx.Client, model_id: str = I2V, body: object = None) -> str:
    """Submit a job over HTTP and return its request id."""
    response = client.post(f"/v1/models/{model_id}", json=I2V_INPUT if body is None else body)
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])
