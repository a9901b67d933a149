"""The control endpoints, driven over HTTP as a test or demo in another process would."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_seedance.testing import EmulatorState, SeedanceEmulator, create_app
from tests.testing._helpers import I2V, I2V_INPUT, OTHER_TOKEN, TOKEN, submit


def test_health_and_reset(emu: SeedanceEmulator, client: httpx.Client, anonymous: httpx.Client) -> None:
    submit(client)
    assert anonymous.get("/_emulator/health").json() == {"status": "ok", "jobs": 1, "requests": 1}
    assert anonymous.post("/_emulator/reset").json() == {"status": "reset"}
    assert anonymous.get("/_emulator/health").json() == {"status": "ok", "jobs": 0, "requests": 0}
    # Control calls are not in the request log: the log shows only what the client under test did.
    assert emu.requests() == []


def test_default_plan_over_http(client: httpx.Client, anonymous: httpx.Client) -> None:
    response = anonymous.put(
        "/_emulator/plan",
        json={"queue_seconds": 0, "run_seconds": 0, "outcome": "fail", "error": {"code": 7}},
    )
    assert response.status_code == 200
    assert response.json()["default"]["outcome"] == "fail"
    request_id = submit(client)
    result = client.get(f"/v1/requests/{request_id}/result").json()
    assert (result["status"], result["error"]) == ("failed", {"code": 7})
    assert anonymous.get("/_emulator/plan").json()["default"]["error"] == {"code": 7}


def test_invalid_plan_is_rejected(anonymous: httpx.Client) -> None:
    response = anonymous.put("/_emulator/plan", json={"queue_seconds": -5})
    assert response.status_code == 422
    assert anonymous.put("/_emulator/plan", json={"outcom": "fail"}).status_code == 422


def test_model_plan_and_next_plans(client: httpx.Client, anonymous: httpx.Client) -> None:
    other = "bytedance/seedance-v2/pro"
    fast = {"queue_seconds": 0, "run_seconds": 0}
    assert anonymous.put(f"/_emulator/models/{other}/plan", json={**fast, "num_videos": 2}).status_code == 200
    assert anonymous.post("/_emulator/plan/next?count=2", json={**fast, "num_videos": 3}).json() == {
        "queued": 2,
        "pending": 2,
    }
    plans = anonymous.get("/_emulator/plan").json()
    assert (plans["models"][other]["num_videos"], len(plans["next"])) == (2, 2)

    ids = [submit(client, other, {"prompt": "x"}) for _ in range(3)]
    counts = [len(client.get(f"/v1/requests/{i}/result").json()["output"]["videos"]) for i in ids]
    assert counts == [3, 3, 2]
    assert anonymous.delete(f"/_emulator/models/{other}/plan").json() == {"model_id": other, "plan": None}
    assert anonymous.get("/_emulator/plan").json()["models"] == {}


def test_faults_over_http(client: httpx.Client, anonymous: httpx.Client) -> None:
    request_id = submit(client)
    added = anonymous.post(
        "/_emulator/faults",
        json={"kind": "http_error", "endpoint": "status", "status_code": 429, "retry_after": 1, "times": 2},
    )
    assert added.status_code == 201
    fault_id = added.json()["id"]
    response = client.get(f"/v1/requests/{request_id}/status")
    assert (response.status_code, response.headers["retry-after"]) == (429, "1")
    [listed] = anonymous.get("/_emulator/faults").json()["faults"]
    assert (listed["id"], listed["times"], listed["kind"]) == (fault_id, 1, "http_error")
    assert anonymous.delete(f"/_emulator/faults/{fault_id}").json() == {"removed": fault_id}
    assert anonymous.delete(f"/_emulator/faults/{fault_id}").status_code == 404
    anonymous.post("/_emulator/faults", json={"kind": "drop"})
    assert anonymous.delete("/_emulator/faults").json() == {"cleared": 1}
    assert client.get(f"/v1/requests/{request_id}/status").status_code == 200
    assert (
        anonymous.post("/_emulator/faults", json={"kind": "unknown_status", "endpoint": "submit"}).status_code
        == 422
    )


def test_request_log_over_http(client: httpx.Client, anonymous: httpx.Client) -> None:
    request_id = submit(client)
    client.get(f"/v1/requests/{request_id}/status")
    client.get(f"/v1/requests/{request_id}/status")
    log = anonymous.get("/_emulator/requests").json()
    assert log["count"] == 3
    assert [(r["endpoint"], r["status_code"]) for r in log["requests"]] == [
        ("submit", 200),
        ("status", 200),
        ("status", 200),
    ]
    assert log["requests"][0]["body"] == I2V_INPUT
    assert log["requests"][0]["headers"]["authorization"] == "Bearer <redacted>"
    assert TOKEN not in str(log)
    statuses = anonymous.get("/_emulator/requests", params={"endpoint": "status", "limit": 1}).json()
    assert (statuses["count"], len(statuses["requests"]), statuses["requests"][0]["request_id"]) == (
        2,
        1,
        request_id,
    )
    raw = anonymous.get("/_emulator/requests", params={"redact": "false"}).json()
    assert raw["requests"][0]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_jobs_settings_models_and_tokens(client: httpx.Client, anonymous: httpx.Client) -> None:
    request_id = submit(client)
    [job] = anonymous.get("/_emulator/jobs").json()["jobs"]
    assert (job["request_id"], job["model_id"], job["body"]) == (request_id, I2V, I2V_INPUT)

    assert anonymous.patch("/_emulator/settings", json={"pricing_enabled": False}).json() == {
        "pricing_enabled": False,
        "ranges_enabled": True,
        "time_scale": 1.0,
        "download_rate_limit": None,
    }
    assert client.get(f"/v1/models/{I2V}").status_code == 404
    anonymous.patch("/_emulator/settings", json={"pricing_enabled": True, "ranges_enabled": False})
    assert anonymous.get("/_emulator/settings").json()["ranges_enabled"] is False

    created = anonymous.post(
        "/_emulator/models", json={"model_id": "acme/clip", "base_price_usd": 2, "price_unit": "output"}
    )
    assert created.status_code == 201
    assert client.get("/v1/models/acme/clip").json()["base_price_usd"] == 2
    assert anonymous.post("/_emulator/models", json={"model_id": "bad//id"}).status_code == 400

    assert anonymous.post("/_emulator/tokens", json={"token": OTHER_TOKEN}).json() == {"accounts": 2}
    other = client.get(
        f"/v1/requests/{request_id}/status", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
    )
    assert other.status_code == 403


@pytest.mark.parametrize("path", ["/_emulator/health", "/_emulator/requests", "/_emulator/jobs"])
async def test_control_endpoints_refuse_remote_clients(path: str) -> None:
    app = create_app(EmulatorState(TOKEN))
    for host, expected in (("10.1.2.3", 403), ("127.0.0.1", 200), ("::1", 200)):
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as remote:
            response = await remote.get(path)
        assert response.status_code == expected, host
