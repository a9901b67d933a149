"""The emulated RunComfy Model API over real HTTP on 127.0.0.1: auth, timelines, cancel, cost, catalog."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from airflow_provider_seedance.models import REQUEST_ID_PATTERN
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from tests.testing._helpers import I2V, I2V_INPUT, OTHER_TOKEN, TOKEN, FakeClock, submit

# -- auth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API token"),
        ({"Authorization": "Basic abc"}, "Missing API token"),
        ({"Authorization": "Bearer"}, "Missing API token"),
        ({"Authorization": "Bearer wrong-token"}, "invalid, expired or revoked"),
    ],
    ids=["missing", "not-bearer", "empty", "wrong"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/models/{I2V}"),
        ("GET", f"/v1/models/{I2V}"),
        ("GET", "/v1/requests/abc/status"),
        ("GET", "/v1/requests/abc/result"),
        ("POST", "/v1/requests/abc/cancel"),
    ],
)
def test_every_api_route_needs_the_token(
    emu: SeedanceEmulator, anonymous: httpx.Client, headers: dict, message: str, method: str, path: str
) -> None:
    response = anonymous.request(method, path, headers=headers, json=I2V_INPUT if method == "POST" else None)
    assert response.status_code == 401
    body = response.json()
    assert body["error_code"] == 400004
    assert message in body["error_message"]
    assert "detail" in body
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "wrong-token" not in response.text
    assert emu.state.job_count() == 0


def test_bearer_scheme_is_case_insensitive(anonymous: httpx.Client) -> None:
    response = anonymous.get(f"/v1/models/{I2V}", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


def test_request_of_another_account_is_forbidden(emu: SeedanceEmulator, client: httpx.Client) -> None:
    emu.state.add_token(OTHER_TOKEN)
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    request_id = submit(client)
    for method, suffix in [("GET", "status"), ("GET", "result"), ("POST", "cancel")]:
        response = client.request(method, f"/v1/requests/{request_id}/{suffix}", headers=other)
        assert response.status_code == 403
        assert response.json()["error_code"] == 403001
    assert client.get(f"/v1/requests/{request_id}/status").status_code == 200


def test_revoked_token(emu: SeedanceEmulator, client: httpx.Client) -> None:
    emu.state.remove_token(TOKEN)
    response = client.get(f"/v1/models/{I2V}")
    assert (response.status_code, response.json()["error_code"]) == (401, 400004)


# -- submit ----------------------------------------------------------------------------------------------


def test_submit_answers_ids_and_absolute_urls(emu: SeedanceEmulator, client: httpx.Client) -> None:
    response = client.post(f"/v1/models/{I2V}", json=I2V_INPUT)
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert REQUEST_ID_PATTERN.match(request_id)
    base = f"{emu.base_url}/v1/requests/{request_id}"
    assert body == {
        "request_id": request_id,
        "status_url": f"{base}/status",
        "result_url": f"{base}/result",
        "cancel_url": f"{base}/cancel",
    }
    [record] = emu.submits()
    assert (record.body, record.model_id, record.status_code) == (I2V_INPUT, I2V, 200)
    assert record.headers["authorization"] == f"Bearer {TOKEN}"
    assert len({submit(client) for _ in range(5)}) == 5


def test_submit_to_an_unknown_model(emu: SeedanceEmulator, client: httpx.Client) -> None:
    for model_id in ("nobody/no-such-model", "bytedance//double-slash"):
        response = client.post(f"/v1/models/{model_id}", json=I2V_INPUT)
        assert response.status_code == 400
        assert response.json()["error_code"] == 400001
    assert emu.state.job_count() == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({**I2V_INPUT, "duration": 99}, ["duration"]),
        ({**I2V_INPUT, "aspect_ratio": "16:9"}, ["aspect_ratio"]),
        ({"prompt": "  "}, ["prompt", "first_frame_image_url"]),
        (
            {**I2V_INPUT, "first_frame_image_url": "ftp://x/y.png", "generate_audio": "yes"},
            ["first_frame_image_url", "generate_audio"],
        ),
    ],
)
def test_seedance_1_5_input_is_validated(
    emu: SeedanceEmulator, client: httpx.Client, body: dict, fields: list[str]
) -> None:
    response = client.post(f"/v1/models/{I2V}", json=body)
    assert response.status_code == 422
    error = response.json()
    assert [item["field"] for item in error["detail"]] == fields
    assert error["error_message"].startswith(f"Invalid input for {I2V}: {fields[0]}: ")
    assert emu.state.job_count() == 0
    assert emu.submits()[0].body == body


def test_submit_body_must_be_a_json_object(client: httpx.Client) -> None:
    model = "bytedance/seedance-v2/pro"
    assert client.post(f"/v1/models/{model}", json=["a", "list"]).status_code == 422
    assert client.post(f"/v1/models/{model}", content=b"").status_code == 422
    broken = client.post(
        f"/v1/models/{model}", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error_message"]


def test_other_catalog_models_accept_any_object(emu: SeedanceEmulator, client: httpx.Client) -> None:
    request_id = submit(
        client, "bytedance/seedance-1-0/lite/reference-to-video", {"text": "hi", "anything": [1, 2]}
    )
    assert emu.state.get_job(request_id).body == {"text": "hi", "anything": [1, 2]}


# -- the timeline over HTTP ------------------------------------------------------------------------------


def test_full_timeline(emu: SeedanceEmulator, client: httpx.Client, clock: FakeClock) -> None:
    emu.set_plan(JobPlan(queue_seconds=4, run_seconds=6, initial_queue_position=2))
    request_id = submit(client)
    status_url = f"/v1/requests/{request_id}/status"
    result_url = f"/v1/requests/{request_id}/result"
    urls = {"status_url": f"{emu.base_url}{status_url}", "result_url": f"{emu.base_url}{result_url}"}

    assert client.get(status_url).json() == {
        "request_id": request_id,
        "status": "in_queue",
        "queue_position": 2,
        **urls,
    }
    clock.advance(2.5)
    assert client.get(status_url).json()["queue_position"] == 1
    early = client.get(result_url).json()
    assert (early["status"], early["finished_at"]) == ("in_queue", None)
    assert "output" not in early

    clock.advance(2)
    assert client.get(status_url).json() == {"request_id": request_id, "status": "in_progress", **urls}
    assert client.get(result_url).json()["status"] == "in_progress"

    clock.advance(6)
    assert client.get(status_url).json()["status"] == "completed"
    result = client.get(result_url)
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "succeeded"
    assert body["output"] == {"video": f"{emu.base_url}/files/{request_id}/0.mp4"}
    created, finished = (
        datetime.fromisoformat(body[k].replace("Z", "+00:00")) for k in ("created_at", "finished_at")
    )
    assert (finished - created).total_seconds() == pytest.approx(10, abs=0.001)
    assert "cost" not in body
    assert "error" not in body


@pytest.mark.parametrize("status_style", ["completed", "failed"])
@pytest.mark.parametrize(
    "error", ["content policy violation", {"code": 500123, "message": "GPU worker crashed"}]
)
def test_failed_runs(client: httpx.Client, emu: SeedanceEmulator, status_style: str, error: object) -> None:
    emu.set_plan(
        JobPlan(
            queue_seconds=0,
            run_seconds=0,
            outcome="fail",
            error=error,
            failed_status_on_status_endpoint=status_style,
        )
    )
    request_id = submit(client)
    assert client.get(f"/v1/requests/{request_id}/status").json()["status"] == status_style
    result = client.get(f"/v1/requests/{request_id}/result").json()
    assert result["status"] == "failed"
    assert result["error"] == error
    assert "output" not in result
    assert result["finished_at"] is not None


def test_result_can_say_completed_for_a_succeeded_run(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.set_plan(JobPlan(queue_seconds=0, run_seconds=0, succeeded_status_on_result_endpoint="completed"))
    request_id = submit(client)
    result = client.get(f"/v1/requests/{request_id}/result").json()
    assert result["status"] == "completed"
    assert result["output"] == {"video": f"{emu.base_url}/files/{request_id}/0.mp4"}
    assert "error" not in result


def test_read_after_write_lag(client: httpx.Client, emu: SeedanceEmulator, clock: FakeClock) -> None:
    emu.set_plan(JobPlan(queue_seconds=0, run_seconds=1, not_found_seconds=2))
    request_id = submit(client)
    for method, suffix in [("GET", "status"), ("GET", "result"), ("POST", "cancel")]:
        answer = client.request(method, f"/v1/requests/{request_id}/{suffix}")
        assert answer.status_code == 404
        assert answer.json()["error_code"] == 404001
    # The job exists all along (it runs and is billed); the API just does not show it yet.
    assert emu.state.get_job(request_id).phase == "in_progress"
    clock.advance(2)
    assert client.get(f"/v1/requests/{request_id}/status").json()["status"] == "completed"
    assert client.get(f"/v1/requests/{request_id}/result").json()["status"] == "succeeded"


def test_stuck_jobs(client: httpx.Client, emu: SeedanceEmulator, clock: FakeClock) -> None:
    emu.plan_next(JobPlan(queue_seconds=1, run_seconds=1, outcome="stuck_in_queue"))
    emu.plan_next(JobPlan(queue_seconds=0, run_seconds=1, outcome="stuck_running"))
    queued, running = submit(client), submit(client)
    clock.advance(3600)
    assert client.get(f"/v1/requests/{queued}/status").json()["status"] == "in_queue"
    assert client.get(f"/v1/requests/{running}/result").json()["status"] == "in_progress"


@pytest.mark.parametrize(
    ("num_videos", "style", "keys"),
    [
        (1, "auto", {"video"}),
        (3, "auto", {"video", "videos"}),
        (3, "videos", {"videos"}),
        (1, "both", {"video", "videos"}),
        (2, "video", {"video"}),
        (0, "auto", set()),
    ],
)
def test_output_shapes(
    client: httpx.Client, emu: SeedanceEmulator, num_videos: int, style: str, keys: set[str]
) -> None:
    plan = JobPlan(queue_seconds=0, run_seconds=0, num_videos=num_videos, output_style=style)  # type: ignore[arg-type]
    emu.set_plan(plan)
    request_id = submit(client)
    result = client.get(f"/v1/requests/{request_id}/result").json()
    assert result["status"] == "succeeded"
    output = result["output"]
    assert set(output) == keys
    urls = [f"{emu.base_url}/files/{request_id}/{i}.mp4" for i in range(num_videos)]
    if "videos" in output:
        assert output["videos"] == urls
    if "video" in output:
        assert output["video"] == urls[0]


# -- cancel ----------------------------------------------------------------------------------------------


def test_cancel_a_queued_request(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    request_id = submit(client)
    response = client.post(f"/v1/requests/{request_id}/cancel")
    assert response.status_code == 202
    assert response.json() == {"request_id": request_id, "status": "cancelled", "outcome": "cancelled"}
    assert client.get(f"/v1/requests/{request_id}/status").json()["status"] == "cancelled"
    result = client.get(f"/v1/requests/{request_id}/result?include_cost=true").json()
    assert (result["status"], result["cost"]) == ("cancelled", 0.0)


@pytest.mark.parametrize(
    ("plan", "status"),
    [
        (JobPlan(queue_seconds=0, run_seconds=60), "in_progress"),
        (JobPlan(queue_seconds=0, run_seconds=0), "completed"),
    ],
)
def test_cancel_a_running_or_finished_request_changes_nothing(
    client: httpx.Client, emu: SeedanceEmulator, plan: JobPlan, status: str
) -> None:
    emu.set_plan(plan)
    request_id = submit(client)
    response = client.post(f"/v1/requests/{request_id}/cancel")
    assert response.status_code == 202
    assert response.json() == {"request_id": request_id, "status": status, "outcome": "not_cancellable"}
    assert client.get(f"/v1/requests/{request_id}/status").json()["status"] == status


# -- cost ------------------------------------------------------------------------------------------------


def test_include_cost(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.set_plan(JobPlan(queue_seconds=0, run_seconds=0))
    request_id = submit(client, body={**I2V_INPUT, "duration": 10})
    assert (
        client.get(f"/v1/requests/{request_id}/result", params={"include_cost": "true"}).json()["cost"] == 0.6
    )
    assert (
        "cost" not in client.get(f"/v1/requests/{request_id}/result", params={"include_cost": "false"}).json()
    )
    emu.plan_next(JobPlan(queue_seconds=0, run_seconds=0, cost_usd=0.123))
    overridden = submit(client)
    assert client.get(f"/v1/requests/{overridden}/result?include_cost=1").json()["cost"] == 0.123
    emu.plan_next(JobPlan(queue_seconds=10, run_seconds=0))
    running = submit(client)
    assert client.get(f"/v1/requests/{running}/result?include_cost=true").json()["cost"] is None


# -- catalog ---------------------------------------------------------------------------------------------


def test_catalog_and_pricing(client: httpx.Client, emu: SeedanceEmulator) -> None:
    response = client.get(f"/v1/models/{I2V}")
    assert response.json() == {
        "model_id": I2V,
        "display_name": "Seedance 1.5 Pro Image to Video",
        "base_price_usd": 0.06,
        "price_unit": "second",
    }
    assert (
        client.get("/v1/models/bytedance/seedance-1-0/pro/fast/text-to-video").json()["price_unit"]
        == "output"
    )
    missing = client.get("/v1/models/nobody/nothing")
    assert (missing.status_code, missing.json()["error_code"]) == (404, 404001)

    emu.state.register_model("acme/video-model", base_price_usd=0.5, price_unit="output")
    assert client.get("/v1/models/acme/video-model").json()["base_price_usd"] == 0.5
    assert submit(client, "acme/video-model", {"anything": True})

    emu.state.pricing_enabled = False
    for model_id in (I2V, "acme/video-model"):
        assert client.get(f"/v1/models/{model_id}").status_code == 404
    # Submitting still works: only the pricing endpoint is gone.
    assert submit(client)


# -- unknown ids and paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix"), [("GET", "status"), ("GET", "result"), ("POST", "cancel")])
def test_unknown_and_malformed_request_ids(client: httpx.Client, method: str, suffix: str) -> None:
    unknown = client.request(method, f"/v1/requests/does-not-exist/{suffix}")
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, 404001)
    assert "does-not-exist" in unknown.json()["error_message"]
    malformed = client.request(method, f"/v1/requests/bad%20id!/{suffix}")
    assert (malformed.status_code, malformed.json()["error_code"]) == (400, 400001)


def test_unknown_path_gets_a_runcomfy_error_body(emu: SeedanceEmulator, client: httpx.Client) -> None:
    response = client.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.json()["error_code"] == 404001
    assert emu.requests()[-1].endpoint == "other"
