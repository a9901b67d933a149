"""Output files over HTTP: public (no token), Range requests, generated sizes, truncated downloads."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.media import GeneratedVideo, sample_video
from tests.testing._helpers import submit


def stream_into(client: httpx.Client, path: str, chunks: list[bytes]) -> None:
    """Stream ``path`` into ``chunks`` (which keeps what arrived even when the stream breaks)."""
    with client.stream("GET", path) as response:
        assert response.headers["content-length"] == "100000"
        chunks.extend(response.iter_bytes())


def finished_job(client: httpx.Client, emu: SeedanceEmulator, **plan: object) -> list[str]:
    """Submit a job that is done at once and return its video URLs."""
    emu.set_plan(JobPlan(queue_seconds=0, run_seconds=0, **plan))  # type: ignore[arg-type]
    request_id = submit(client)
    output = client.get(f"/v1/requests/{request_id}/result").json()["output"]
    return output.get("videos") or [output["video"]]


def test_download_needs_no_token_and_gets_none(
    client: httpx.Client, emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    [url] = finished_job(client, emu)
    response = anonymous.get(url)
    assert response.status_code == 200
    assert response.content == sample_video().read()
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(sample_video().size)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] == sample_video().etag
    [record] = emu.requests("download")
    assert "authorization" not in record.headers
    assert (record.status_code, record.request_id) == (200, url.split("/")[-2])


def test_several_videos_of_a_planned_size(
    client: httpx.Client, emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    urls = finished_job(client, emu, num_videos=3, video_size_bytes=300_000)
    assert [url.rsplit("/", 1)[1] for url in urls] == ["0.mp4", "1.mp4", "2.mp4"]
    expected = hashlib.sha256(GeneratedVideo(300_000).read()).hexdigest()
    for url in urls:
        response = anonymous.get(url)
        assert len(response.content) == int(response.headers["content-length"]) == 300_000
        assert hashlib.sha256(response.content).hexdigest() == expected


def test_file_of_an_unfinished_or_unknown_job_is_missing(
    client: httpx.Client, emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    [url] = finished_job(client, emu)
    request_id = url.split("/")[-2]
    assert anonymous.get(f"/files/{request_id}/1.mp4").status_code == 404
    assert anonymous.get("/files/not-a-job/0.mp4").status_code == 404
    assert anonymous.get("/files/bad%20id/0.mp4").status_code == 404
    emu.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    pending = submit(client)
    missing = anonymous.get(f"/files/{pending}/0.mp4")
    assert (missing.status_code, missing.json()["error_code"]) == (404, 404001)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, 5000),
        ("bytes=-10", 4990, 5000),
        ("bytes=4999-9999", 4999, 5000),
    ],
)
def test_range_requests(anonymous: httpx.Client, header: str, start: int, end: int) -> None:
    whole = GeneratedVideo(5000).read()
    response = anonymous.get("/files/generated/5000.mp4", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == whole[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/5000"
    assert response.headers["content-length"] == str(end - start)


def test_range_on_a_job_output_resumes_exactly(
    client: httpx.Client, emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    [url] = finished_job(client, emu)
    data = sample_video().read()
    first = anonymous.get(url, headers={"Range": "bytes=0-9999"}).content
    rest = anonymous.get(url, headers={"Range": "bytes=10000-"}).content
    assert first + rest == data


def test_unsatisfiable_range(anonymous: httpx.Client) -> None:
    response = anonymous.get("/files/generated/5000.mp4", headers={"Range": "bytes=5000-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */5000"


def test_if_range_with_another_etag_gets_the_whole_file(anonymous: httpx.Client) -> None:
    headers = {"Range": "bytes=10-19", "If-Range": '"some-other-version"'}
    response = anonymous.get("/files/generated/5000.mp4", headers=headers)
    assert (response.status_code, len(response.content)) == (200, 5000)
    headers["If-Range"] = GeneratedVideo(5000).etag
    assert anonymous.get("/files/generated/5000.mp4", headers=headers).status_code == 206


def test_ranges_disabled(emu: SeedanceEmulator, anonymous: httpx.Client) -> None:
    emu.state.ranges_enabled = False
    response = anonymous.get("/files/generated/5000.mp4", headers={"Range": "bytes=10-19"})
    assert (response.status_code, len(response.content)) == (200, 5000)
    assert response.headers["accept-ranges"] == "none"
    assert "content-range" not in response.headers


def test_generated_route_sizes_and_determinism(anonymous: httpx.Client) -> None:
    size = 3 * 1024 * 1024 + 17
    digests = set()
    for _ in range(2):
        with anonymous.stream("GET", f"/files/generated/{size}.mp4") as response:
            assert response.headers["content-length"] == str(size)
            digest, received = hashlib.sha256(), 0
            for chunk in response.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        assert received == size
        digests.add(digest.hexdigest())
    assert digests == {hashlib.sha256(GeneratedVideo(size).read()).hexdigest()}
    assert anonymous.get("/files/generated/10.mp4").status_code == 404
    assert anonymous.get("/files/generated/abc.mp4").status_code == 404


def test_head_gives_the_size_without_a_body(anonymous: httpx.Client) -> None:
    response = anonymous.head("/files/generated/123456.mp4")
    assert response.status_code == 200
    assert response.headers["content-length"] == "123456"
    assert response.content == b""


@pytest.mark.parametrize(
    ("fault", "received"), [({"truncate_at_bytes": 1234}, 1234), ({"truncate_fraction": 0.25}, 25_000)]
)
def test_truncated_download(
    emu: SeedanceEmulator, anonymous: httpx.Client, fault: dict, received: int
) -> None:
    emu.add_fault(Fault(kind="truncated", endpoint="download", **fault))
    received_chunks: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError, match="expected 100000"):
        stream_into(anonymous, "/files/generated/100000.mp4", received_chunks)
    got = sum(len(chunk) for chunk in received_chunks)
    assert got == received
    # The next download is whole.
    assert len(anonymous.get("/files/generated/100000.mp4").content) == 100_000


def test_truncated_range_download(emu: SeedanceEmulator, anonymous: httpx.Client) -> None:
    emu.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=50))
    with pytest.raises(httpx.RemoteProtocolError, match="received 50 bytes, expected 100"):
        anonymous.get("/files/generated/5000.mp4", headers={"Range": "bytes=100-199"})


def test_dropped_and_failing_downloads(
    client: httpx.Client, emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    [url] = finished_job(client, emu)
    request_id = url.split("/")[-2]
    emu.add_fault(Fault(kind="drop", endpoint="download", request_id=request_id))
    with pytest.raises(httpx.RemoteProtocolError):
        anonymous.get(url)
    emu.add_fault(Fault(kind="http_error", endpoint="download", status_code=503, retry_after=3))
    failed = anonymous.get(url)
    assert (failed.status_code, failed.headers["retry-after"]) == (503, "3")
    assert anonymous.get(url).status_code == 200
    assert [r.fault for r in emu.requests("download")] == ["drop", "http_error", None]


def test_client_that_leaves_early_does_not_stall_the_server(
    emu: SeedanceEmulator, anonymous: httpx.Client
) -> None:
    for _ in range(3):
        with anonymous.stream("GET", "/files/generated/500000000.mp4") as response:
            assert next(response.iter_bytes())
    # Closing those streams mid-body left the server healthy.
    assert anonymous.get("/files/generated/1000.mp4").status_code == 200
    assert emu.state.count("download") == 4
