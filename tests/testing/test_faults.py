"""Fault injection as a client sees it over real HTTP: statuses, headers, broken bodies, cut connections."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.app import DEAD_LINK_PAGE, DEFAULT_MALFORMED_BODY
from tests.testing._helpers import I2V, I2V_INPUT, submit


@pytest.fixture
def request_id(client: httpx.Client, emu: SeedanceEmulator) -> str:
    emu.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    return submit(client)


@pytest.mark.parametrize(
    ("status_code", "error_code", "retry_after", "header"),
    [
        (429, None, 2, "2"),
        (503, None, 0.5, "0.5"),
        (500, None, None, None),
        (402, 400002, None, None),
        (404, 404001, None, None),
    ],
)
def test_http_error(
    client: httpx.Client,
    emu: SeedanceEmulator,
    request_id: str,
    status_code: int,
    error_code: int | None,
    retry_after: float | None,
    header: str | None,
) -> None:
    emu.add_fault(
        Fault(
            kind="http_error",
            endpoint="status",
            status_code=status_code,
            error_code=error_code,
            retry_after=retry_after,
        )
    )
    response = client.get(f"/v1/requests/{request_id}/status")
    assert response.status_code == status_code
    assert response.headers.get("retry-after") == header
    body = response.json()
    assert body.get("error_code") == error_code
    assert "injected fault" in body["error_message"]
    # times=1 by default: the next call is answered normally.
    assert client.get(f"/v1/requests/{request_id}/status").status_code == 200
    assert [r.fault for r in emu.requests("status")] == ["http_error", None]


def test_http_error_with_a_custom_body(client: httpx.Client, emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(
        Fault(kind="http_error", endpoint="result", status_code=502, body={"message": "upstream", "code": 7})
    )
    response = client.get(f"/v1/requests/{request_id}/result")
    assert (response.status_code, response.json()) == (502, {"message": "upstream", "code": 7})


def test_failed_submit_creates_no_job(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.add_fault(Fault(kind="http_error", endpoint="submit", status_code=500))
    assert client.post(f"/v1/models/{I2V}", json=I2V_INPUT).status_code == 500
    assert emu.state.job_count() == 0
    assert emu.state.count("submit") == 1


def test_error_200(client: httpx.Client, emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(Fault(kind="error_200", endpoint="result", error_code=404001, error_message="gone"))
    response = client.get(f"/v1/requests/{request_id}/result")
    assert response.status_code == 200
    assert response.json() == {"error_code": 404001, "error_message": "gone", "detail": None}


@pytest.mark.parametrize("text", [None, "<html>502 Bad Gateway</html>"])
def test_malformed_json(
    client: httpx.Client, emu: SeedanceEmulator, request_id: str, text: str | None
) -> None:
    emu.add_fault(Fault(kind="malformed_json", endpoint="status", body=text))
    response = client.get(f"/v1/requests/{request_id}/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == (text or DEFAULT_MALFORMED_BODY)
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel", "model"])
def test_drop_cuts_the_connection(
    client: httpx.Client, emu: SeedanceEmulator, request_id: str, endpoint: str
) -> None:
    emu.add_fault(Fault(kind="drop", endpoint=endpoint))  # type: ignore[arg-type]
    method, path = {
        "status": ("GET", f"/v1/requests/{request_id}/status"),
        "result": ("GET", f"/v1/requests/{request_id}/result"),
        "cancel": ("POST", f"/v1/requests/{request_id}/cancel"),
        "model": ("GET", f"/v1/models/{I2V}"),
    }[endpoint]
    with pytest.raises(httpx.RemoteProtocolError, match="received 0 bytes"):
        client.request(method, path)
    # The connection was closed, not the server: the next call on the same client works.
    assert client.request(method, path).status_code in (200, 202)
    assert [r.fault for r in emu.requests(endpoint)] == ["drop", None]


def test_dropped_submit_did_create_a_job(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.add_fault(Fault(kind="drop", endpoint="submit"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"/v1/models/{I2V}", json=I2V_INPUT)
    # The ambiguous case a client must never retry: the job exists (and would be billed).
    assert emu.state.job_count() == 1
    assert emu.state.count("submit") == 1


def test_slow_provokes_a_read_timeout(emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(Fault(kind="slow", endpoint="status", delay_seconds=1.0))
    with httpx.Client(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {emu.token}"}, timeout=0.2
    ) as fast:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            fast.get(f"/v1/requests/{request_id}/status")
        assert time.monotonic() - started < 0.9
    # Recorded on arrival: the count is right although the answer is still pending.
    assert emu.state.count("status") == 1
    assert emu.requests("status")[0].fault == "slow"


def test_slow_then_answers_normally(client: httpx.Client, emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(Fault(kind="slow", endpoint="status", delay_seconds=0.3))
    started = time.monotonic()
    response = client.get(f"/v1/requests/{request_id}/status")
    assert time.monotonic() - started >= 0.3
    assert response.json()["status"] == "in_queue"


def test_truncated_json(client: httpx.Client, emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(Fault(kind="truncated", endpoint="result", truncate_at_bytes=10))
    with pytest.raises(httpx.RemoteProtocolError, match="received 10 bytes"):
        client.get(f"/v1/requests/{request_id}/result")


@pytest.mark.parametrize("endpoint", ["status", "result"])
def test_unknown_status(client: httpx.Client, emu: SeedanceEmulator, request_id: str, endpoint: str) -> None:
    emu.add_fault(Fault(kind="unknown_status", endpoint=endpoint, status_value="teleporting"))  # type: ignore[arg-type]
    body = client.get(f"/v1/requests/{request_id}/{endpoint}").json()
    assert (body["request_id"], body["status"]) == (request_id, "teleporting")
    default = Fault(kind="unknown_status", endpoint=endpoint)  # type: ignore[arg-type]
    emu.add_fault(default)
    assert client.get(f"/v1/requests/{request_id}/{endpoint}").json()["status"] == "mystery_state"


def test_skip_then_times(client: httpx.Client, emu: SeedanceEmulator, request_id: str) -> None:
    emu.add_fault(Fault(kind="http_error", endpoint="status", status_code=503, skip=2, times=2))
    codes = [client.get(f"/v1/requests/{request_id}/status").status_code for _ in range(6)]
    assert codes == [200, 200, 503, 503, 200, 200]


def test_times_none_hits_every_call_until_cleared(
    client: httpx.Client, emu: SeedanceEmulator, request_id: str
) -> None:
    emu.add_fault(Fault(kind="http_error", endpoint="any", status_code=500, times=None))
    assert [client.get(f"/v1/requests/{request_id}/result").status_code for _ in range(3)] == [500] * 3
    assert client.get(f"/v1/models/{I2V}").status_code == 500
    assert emu.clear_faults() == 1
    assert client.get(f"/v1/requests/{request_id}/result").status_code == 200


def test_probability_is_reproducible(emu: SeedanceEmulator, client: httpx.Client, request_id: str) -> None:
    patterns = []
    for _ in range(2):
        emu.state.random.seed(11)
        emu.clear_faults()
        emu.add_fault(
            Fault(kind="http_error", endpoint="status", status_code=503, probability=0.5, times=None)
        )
        patterns.append([client.get(f"/v1/requests/{request_id}/status").status_code for _ in range(20)])
    assert patterns[0] == patterns[1]
    assert 3 <= patterns[0].count(503) <= 17


def test_faults_match_model_and_request(client: httpx.Client, emu: SeedanceEmulator) -> None:
    other_model = "bytedance/seedance-v2/pro"
    emu.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    mine, theirs = submit(client), submit(client, other_model, {"prompt": "x"})
    emu.add_fault(
        Fault(kind="http_error", endpoint="status", model_id=other_model, status_code=502, times=None)
    )
    emu.add_fault(Fault(kind="http_error", endpoint="result", request_id=mine, status_code=503, times=None))
    assert client.get(f"/v1/requests/{mine}/status").status_code == 200
    assert client.get(f"/v1/requests/{theirs}/status").status_code == 502
    assert client.get(f"/v1/requests/{mine}/result").status_code == 503
    assert client.get(f"/v1/requests/{theirs}/result").status_code == 200
    emu.add_fault(Fault(kind="http_error", endpoint="submit", model_id=other_model, status_code=429))
    assert client.post(f"/v1/models/{I2V}", json=I2V_INPUT).status_code == 200
    assert client.post(f"/v1/models/{other_model}", json={"prompt": "x"}).status_code == 429


def test_faults_apply_only_after_authentication(
    anonymous: httpx.Client, emu: SeedanceEmulator, request_id: str
) -> None:
    emu.add_fault(Fault(kind="http_error", endpoint="status", status_code=503))
    assert anonymous.get(f"/v1/requests/{request_id}/status").status_code == 401
    assert len(emu.state.faults()) == 1


def test_error_page_answers_a_download_with_200_html(client: httpx.Client, emu: SeedanceEmulator) -> None:
    emu.add_fault(Fault(kind="error_page", endpoint="download"))
    answer = client.get("/files/generated/4096.mp4")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.content == DEAD_LINK_PAGE.encode()
    assert len(client.get("/files/generated/4096.mp4").content) == 4096  # one call only


@pytest.mark.parametrize("hide_length", [False, True])
def test_empty_body_answers_a_download_with_200_and_no_bytes(
    client: httpx.Client, emu: SeedanceEmulator, hide_length: bool
) -> None:
    emu.add_fault(Fault(kind="empty_body", endpoint="download", hide_length=hide_length))
    answer = client.get("/files/generated/4096.mp4")
    assert answer.status_code == 200
    assert answer.content == b""
    assert answer.headers.get("content-length") == (None if hide_length else "0")


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error_page", "endpoint": "status"},
        {"kind": "empty_body", "endpoint": "submit"},
        {"kind": "error_page", "endpoint": "download", "body": {"not": "text"}},
    ],
    ids=["page-on-status", "empty-on-submit", "page-body-not-text"],
)
def test_dead_link_faults_only_shape_downloads(fault: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fault.model_validate(fault)


def test_a_redirect_aimed_at_an_api_call_answers_307_and_creates_nothing(
    client: httpx.Client, emu: SeedanceEmulator
) -> None:
    emu.add_fault(Fault(kind="redirect", endpoint="submit", location="https://elsewhere.example/v1"))
    answer = client.post(f"/v1/models/{I2V}", json=I2V_INPUT)
    assert answer.status_code == 307
    assert answer.headers["location"] == "https://elsewhere.example/v1"
    assert emu.state.jobs() == []
