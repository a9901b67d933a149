"""The transfer operators against the Seedance emulator (real MP4 outputs, generated bodies, faults) and S3.

In-process moto (``s3``) for most tests; ``moto_server`` (a real S3 endpoint over HTTP, reached through the
``aws_default`` connection's ``endpoint_url``) for the end-to-end ones.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceRequestFailedError,
    SeedanceTransferError,
    SeedanceURLRefusedError,
)
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from airflow_provider_seedance.testing.media import generated_video
from airflow_provider_seedance.transfers.seedance_to_object_storage import SeedanceToObjectStorageOperator
from airflow_provider_seedance.transfers.seedance_to_s3 import SeedanceToS3Operator
from tests._support import TEST_TOKEN
from tests.network_guard import no_link_local_traffic, resolve_names
from tests.transfers._support import (
    BUCKET,
    GENERATION_INPUT,
    MODES,
    FakeTI,
    assert_nothing_left,
    finished_request,
)
from tests.transfers.conftest import MotoServer

__all__ = ["no_link_local_traffic"]

MiB = 1024 * 1024


def run(**kwargs: Any) -> tuple[list[str], FakeTI]:
    kwargs.setdefault("task_id", "store")
    kwargs.setdefault("download_retry_backoff", 0.01)
    ti = FakeTI()
    return SeedanceToS3Operator(**kwargs).execute({"ti": ti}), ti  # type: ignore[arg-type]


def sha_of_generated(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in generated_video(size).iter_range(0, size):
        digest.update(chunk)
    return digest.hexdigest()


def downloads(emulator: SeedanceEmulator) -> list[Any]:
    return emulator.state.requests("download")


def test_request_id_copies_every_video_without_the_token(
    emulator: SeedanceEmulator, seedance_conn: str, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = finished_request(emulator, num_videos=3)
    uris, ti = run(request_id=request_id, dest_key=f"s3://{BUCKET}/{request_id}/clip-{{index}}.mp4")

    assert uris == [f"s3://{BUCKET}/{request_id}/clip-{n}.mp4" for n in range(3)]
    with httpx.Client() as http:
        for index in range(3):
            source = f"{emulator.base_url}/files/{request_id}/{index}.mp4"
            expected = http.get(source).content
            answer = s3.get_object(Bucket=BUCKET, Key=f"{request_id}/clip-{index}.mp4")
            assert answer["Body"].read() == expected
            assert answer["ContentType"] == "video/mp4"
            assert answer["Metadata"] == {
                "sha256": hashlib.sha256(expected).hexdigest(),
                "source-url": source,
                "seedance-request-id": request_id,
            }
    assert [item["skipped"] for item in ti.xcom["objects"]] == [False] * 3
    # The API was called with the token; the public output files were not.
    assert all(r.headers.get("authorization") for r in emulator.state.requests("result"))
    files = [r for r in downloads(emulator) if r.request_id == request_id]
    assert len(files) == 6  # three copies + three reads by this test
    assert all("authorization" not in r.headers for r in files)
    captured = capsys.readouterr()
    assert "Copied " in captured.out  # the task log was captured...
    assert TEST_TOKEN not in captured.out + captured.err  # ...and the token is nowhere in it
    assert_nothing_left(s3, [f"{request_id}/clip-{n}.mp4" for n in range(3)])


def test_several_videos_without_index_fail_before_any_download(
    emulator: SeedanceEmulator, seedance_conn: str, s3: Any
) -> None:
    request_id = finished_request(emulator, num_videos=2)
    with pytest.raises(SeedanceConfigurationError, match=r"\{index\}"):
        run(request_id=request_id, dest_key=f"s3://{BUCKET}/clip.mp4")
    assert downloads(emulator) == []
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    ("plan", "error", "match"),
    [
        ({"outcome": "fail", "error": "content policy"}, SeedanceRequestFailedError, "content policy"),
        ({"num_videos": 0}, SeedanceTransferError, "no video"),
    ],
)
def test_request_without_video_fails_clearly(
    emulator: SeedanceEmulator,
    seedance_conn: str,
    s3: Any,
    plan: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    request_id = finished_request(emulator, **plan)
    with pytest.raises(error, match=match):
        run(request_id=request_id, dest_key=f"s3://{BUCKET}/clip.mp4")
    assert_nothing_left(s3)


def test_request_still_running_fails_clearly(emulator: SeedanceEmulator, seedance_conn: str, s3: Any) -> None:
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=60, outcome="stuck_running"))
    hook = SeedanceHook()
    request_id = hook.submit(SEEDANCE_1_5_PRO_I2V_MODEL_ID, GENERATION_INPUT).request_id
    hook.close()
    with pytest.raises(SeedanceRequestFailedError, match="has not finished yet"):
        run(request_id=request_id, dest_key=f"s3://{BUCKET}/clip.mp4")


def test_truncated_download_resumes_with_range(emulator: SeedanceEmulator, s3: Any) -> None:
    size = 12 * MiB + 17
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=7 * MiB + 5))
    url = emulator.url(f"/files/generated/{size}.mp4")
    _, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/big.mp4", part_size=5 * MiB, download_connections=1)

    head = s3.head_object(Bucket=BUCKET, Key="big.mp4")
    assert head["ContentLength"] == size
    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    seen = downloads(emulator)
    assert [r.status_code for r in seen] == [200, 206]
    assert seen[1].headers["range"] == f"bytes={7 * MiB + 5}-"
    assert seen[1].headers["if-range"] == '"generated-12582929"'
    assert_nothing_left(s3, ["big.mp4"])


def test_parallel_download_resumes_a_cut_part(emulator: SeedanceEmulator, s3: Any) -> None:
    """Ranges fetched over several connections; the one cut mid-part resumes inside its part."""
    size = 12 * MiB + 17
    # The first GET only announces the file (its body is not read); the second, a part, is cut halfway.
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_fraction=0.5, times=2))
    url = emulator.url(f"/files/generated/{size}.mp4")
    _, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/big.mp4", part_size=5 * MiB, download_connections=3)

    body = s3.get_object(Bucket=BUCKET, Key="big.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha_of_generated(size) == ti.xcom["objects"][0]["sha256"]
    ranged = [r for r in downloads(emulator) if "range" in r.headers]
    assert {r.status_code for r in ranged} == {206}
    starts = sorted(int(r.headers["range"].removeprefix("bytes=").split("-")[0]) for r in ranged)
    boundaries = [0, 5 * MiB, 10 * MiB]
    assert [s for s in starts if s in boundaries] == boundaries  # each part asked once from its start
    assert len([s for s in starts if s not in boundaries]) == 1  # and the cut one resumed once
    assert {r.headers["if-range"] for r in ranged} == {f'"generated-{size}"'}
    assert_nothing_left(s3, ["big.mp4"])


def test_rate_limited_source_is_copied_faster_over_several_connections(
    emulator: SeedanceEmulator, s3: Any
) -> None:
    """The emulator's per-connection limit holds each connection back; the file arrives whole either way."""
    size = 12 * MiB
    emulator.state.download_rate_limit = 20 * MiB
    url = emulator.url(f"/files/generated/{size}.mp4")
    _, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/big.mp4", part_size=5 * MiB)
    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    assert len([r for r in downloads(emulator) if "range" in r.headers]) == 3
    assert_nothing_left(s3, ["big.mp4"])


def test_truncated_download_without_ranges_restarts(emulator: SeedanceEmulator, s3: Any) -> None:
    size = 12 * MiB + 17
    emulator.state.ranges_enabled = False
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=7 * MiB))
    url = emulator.url(f"/files/generated/{size}.mp4")
    _, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/big.mp4", part_size=5 * MiB)

    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    seen = downloads(emulator)
    assert [r.status_code for r in seen] == [200, 200]
    assert "range" not in seen[1].headers  # the server said Accept-Ranges: none
    assert_nothing_left(s3, ["big.mp4"])


@MODES
def test_download_that_keeps_failing_leaves_nothing(
    emulator: SeedanceEmulator, s3: Any, mode: dict[str, Any]
) -> None:
    emulator.state.ranges_enabled = False
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=6 * MiB, times=None))
    url = emulator.url(f"/files/generated/{12 * MiB}.mp4")
    with pytest.raises(SeedanceConnectionError):
        run(
            source_urls=url,
            dest_key=f"s3://{BUCKET}/big.mp4",
            part_size=5 * MiB,
            download_max_retries=2,
            **mode,
        )
    assert len(downloads(emulator)) == 4  # the first attempt advanced; three more did not
    assert_nothing_left(s3)


def test_server_errors_are_retried(emulator: SeedanceEmulator, s3: Any) -> None:
    emulator.add_fault(Fault(kind="http_error", endpoint="download", status_code=503, times=2))
    emulator.add_fault(Fault(kind="http_error", endpoint="download", status_code=429, retry_after=0, times=1))
    url = emulator.url("/files/generated/4096.mp4")
    run(source_urls=url, dest_key=f"s3://{BUCKET}/small.mp4")
    assert [r.status_code for r in downloads(emulator)] == [503, 503, 429, 200]


@MODES
def test_end_to_end_through_the_aws_connection(
    emulator: SeedanceEmulator, moto_server: MotoServer, mode: dict[str, Any]
) -> None:
    """40 MiB through the S3Hook and a real S3 endpoint, in parallel ranges: bytes read back and compared."""
    size = 40 * MiB + 3
    url = emulator.url(f"/files/generated/{size}.mp4")
    uris, ti = run(source_urls=[url], dest_key=f"s3://{BUCKET}/e2e/{{index}}.mp4", **mode)

    assert uris == [f"s3://{BUCKET}/e2e/0.mp4"]
    answer = moto_server.client.get_object(Bucket=BUCKET, Key="e2e/0.mp4")
    digest = hashlib.sha256()
    for chunk in answer["Body"].iter_chunks(MiB):
        digest.update(chunk)
    expected = sha_of_generated(size)
    assert digest.hexdigest() == expected
    assert answer["Metadata"].get("sha256") == (expected if mode else None)
    assert answer["ContentLength"] == size
    assert ti.xcom["objects"][0]["size"] == size
    assert ti.xcom["objects"][0]["sha256"] == expected
    assert len([r for r in downloads(emulator) if "range" in r.headers]) == 6  # 8 MiB parts, 3 bytes over
    assert_nothing_left(moto_server.client, ["e2e/0.mp4"])

    # A retry of the task is idempotent: nothing is copied again.
    before = len(downloads(emulator))
    _, again = run(source_urls=[url], dest_key=f"s3://{BUCKET}/e2e/{{index}}.mp4", **mode)
    assert again.xcom["objects"][0]["skipped"] is True
    assert len(downloads(emulator)) == before + 1  # one GET for the headers, body not read


def test_progress_is_logged(
    emulator: SeedanceEmulator, s3: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_seedance.transfers import _streaming

    monkeypatch.setattr(_streaming, "PROGRESS_LOG_MIN_INTERVAL_SECONDS", 0.0)
    url = emulator.url(f"/files/generated/{12 * MiB}.mp4")
    run(source_urls=url, dest_key=f"s3://{BUCKET}/big.mp4")
    captured = capsys.readouterr()  # Airflow's structlog loggers write to stdout
    lines = (captured.out + captured.err).splitlines()
    assert any("Copying " in line and "(50%)" in line and "MB/s" in line for line in lines)
    assert any("Copied " in line and "sha256" in line for line in lines)


def test_object_storage_from_a_request(emulator: SeedanceEmulator, seedance_conn: str, tmp_path: Any) -> None:
    request_id = finished_request(emulator, num_videos=2)
    op = SeedanceToObjectStorageOperator(
        task_id="store", request_id=request_id, dest_path=f"file://{tmp_path}/{request_id}/{{index}}.mp4"
    )
    uris = op.execute({})  # type: ignore[arg-type]
    assert uris == [f"file://{tmp_path}/{request_id}/{n}.mp4" for n in range(2)]
    with httpx.Client() as http:
        for index in range(2):
            expected = http.get(f"{emulator.base_url}/files/{request_id}/{index}.mp4").content
            assert (tmp_path / request_id / f"{index}.mp4").read_bytes() == expected


# ---------------------------------------------------------------------------------------------------------
# Issue 13, item 9: a short copy is never committed
# ---------------------------------------------------------------------------------------------------------


def break_unsized_then_cap_ranges(emulator: SeedanceEmulator, *, cut: int, cap: int) -> None:
    """The CDN shape of the report: a first 200 without Content-Length that breaks, then capped 206 ranges."""
    emulator.add_fault(
        Fault(kind="truncated", endpoint="download", truncate_at_bytes=cut, hide_length=True, times=1)
    )
    emulator.add_fault(Fault(kind="capped_range", endpoint="download", cap_bytes=cap, times=None))


def test_capped_ranges_after_an_unsized_break_copy_the_whole_file(
    emulator: SeedanceEmulator, s3: Any
) -> None:
    # Reported: 3,048 of 10,240 bytes stored and "verified" (2,000 before the break + one capped range).
    size = 10_240
    break_unsized_then_cap_ranges(emulator, cut=2_000, cap=1_048)
    url = emulator.url(f"/files/generated/{size}.mp4")
    _, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4")

    head = s3.head_object(Bucket=BUCKET, Key="clip.mp4")
    assert head["ContentLength"] == size
    assert ti.xcom["objects"][0]["size"] == size
    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    seen = downloads(emulator)
    assert "content-length" not in seen[0].headers  # what the client sent; the fault is on the answer
    assert [r.status_code for r in seen] == [200] + [206] * 8  # 2,000 + 7 x 1,048 + 904 bytes
    assert seen[1].headers["range"] == "bytes=2000-"
    assert seen[2].headers["range"] == "bytes=3048-"
    assert_nothing_left(s3, ["clip.mp4"])


def test_capped_ranges_copy_the_whole_file_to_object_storage(
    emulator: SeedanceEmulator, tmp_path: Any
) -> None:
    size = 10_240
    break_unsized_then_cap_ranges(emulator, cut=2_000, cap=1_048)
    op = SeedanceToObjectStorageOperator(
        task_id="store",
        source_urls=emulator.url(f"/files/generated/{size}.mp4"),
        dest_path=f"file://{tmp_path}/clip.mp4",
        download_retry_backoff=0.01,
    )
    op.execute({})  # type: ignore[arg-type]
    data = (tmp_path / "clip.mp4").read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha_of_generated(size)


def test_unsized_break_with_an_unknown_total_stores_nothing(emulator: SeedanceEmulator, s3: Any) -> None:
    # Every answer is unsized and breaks: the size is never learnt, so no piece can be trusted as complete.
    emulator.state.ranges_enabled = False
    emulator.add_fault(
        Fault(kind="truncated", endpoint="download", truncate_at_bytes=3_000, hide_length=True, times=None)
    )
    url = emulator.url("/files/generated/10240.mp4")
    with pytest.raises(SeedanceConnectionError):
        run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", download_max_retries=2)
    assert_nothing_left(s3)


# ---------------------------------------------------------------------------------------------------------
# Issue 13, items 10 and 11: no metadata addresses, no credentials, on any hop
# ---------------------------------------------------------------------------------------------------------


def test_source_url_with_credentials_is_refused_before_any_download(
    emulator: SeedanceEmulator, s3: Any
) -> None:
    # httpx would send user:password@ as "Authorization: Basic ..." to the file host.
    url = emulator.url("/files/generated/4096.mp4").replace("http://", "http://user:s3cr3t@")
    with pytest.raises(SeedanceConfigurationError, match="user:password@") as caught:
        run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4")
    assert "s3cr3t" not in str(caught.value)
    assert downloads(emulator) == []
    assert_nothing_left(s3)


def test_redirect_to_a_url_with_credentials_is_refused(emulator: SeedanceEmulator, s3: Any) -> None:
    target = emulator.url("/files/generated/4096.mp4").replace("http://", "http://user:s3cr3t@")
    emulator.add_fault(Fault(kind="redirect", endpoint="download", location=target))
    with pytest.raises(SeedanceURLRefusedError, match="user:password@") as caught:
        run(source_urls=emulator.url("/files/generated/8192.mp4"), dest_key=f"s3://{BUCKET}/clip.mp4")
    assert "s3cr3t" not in str(caught.value)
    assert [r.status_code for r in downloads(emulator)] == [302]  # the second hop was never sent
    assert all("authorization" not in r.headers for r in emulator.state.requests())
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://2852039166/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://100.100.100.200/latest/meta-data/ram/security-credentials/",
    ],
)
def test_redirect_to_the_metadata_address_is_refused(
    emulator: SeedanceEmulator,
    s3: Any,
    no_link_local_traffic: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    location: str,
) -> None:
    resolve_names(monkeypatch, {"metadata.google.internal": "169.254.169.254"})
    emulator.add_fault(Fault(kind="redirect", endpoint="download", location=location))
    with pytest.raises(SeedanceURLRefusedError, match="link-local"):
        run(source_urls=emulator.url("/files/generated/4096.mp4"), dest_key=f"s3://{BUCKET}/clip.mp4")
    assert [r.status_code for r in downloads(emulator)] == [302]
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://0251.0376.0251.0376/", "http://[::ffff:a9fe:a9fe]/"],
)
def test_literal_metadata_source_fails_before_any_call(
    s3: Any, no_link_local_traffic: list[Any], url: str
) -> None:
    with pytest.raises(
        SeedanceConfigurationError, match=r"source_urls\[0\]: downloads never reach link-local"
    ):
        run(source_urls=[url], dest_key=f"s3://{BUCKET}/clip.mp4")
    assert_nothing_left(s3)


def test_source_name_resolving_to_link_local_is_refused(
    emulator: SeedanceEmulator, s3: Any, no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_names(monkeypatch, {"cdn.attacker.test": "169.254.169.254"})
    with pytest.raises(SeedanceURLRefusedError, match=r"cdn\.attacker\.test.*169\.254\.169\.254"):
        run(source_urls="http://cdn.attacker.test/clip.mp4?sig=secret", dest_key=f"s3://{BUCKET}/clip.mp4")
    assert_nothing_left(s3)


@pytest.mark.parametrize("where", ["connection", "operator"])
def test_private_networks_can_be_refused(
    emulator: SeedanceEmulator,
    s3: Any,
    no_link_local_traffic: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    resolve_names(monkeypatch, {"intranet.test": "10.9.8.7"})
    extra = {"allow_private_networks": False} if where == "connection" else {}
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", emulator.connection_json(**extra))
    options = {"allow_private_networks": False} if where == "operator" else {}
    with pytest.raises(SeedanceURLRefusedError, match="private networks"):
        run(source_urls="http://intranet.test/clip.mp4", dest_key=f"s3://{BUCKET}/clip.mp4", **options)
    # Loopback (the emulator) stays allowed under the same setting.
    run(source_urls=emulator.url("/files/generated/4096.mp4"), dest_key=f"s3://{BUCKET}/clip.mp4", **options)
    assert_nothing_left(s3, ["clip.mp4"])


def test_private_networks_are_allowed_by_default(
    emulator: SeedanceEmulator, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name for a private address is fetched (here the address is the emulator's, on loopback).
    resolve_names(monkeypatch, {"files.intranet.test": "127.0.0.1"})
    url = emulator.url("/files/generated/4096.mp4").replace("127.0.0.1", "files.intranet.test")
    run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4")
    assert downloads(emulator)[0].headers["host"].startswith("files.intranet.test:")
    assert_nothing_left(s3, ["clip.mp4"])


# ---------------------------------------------------------------------------------------------------------
# Issue 13, item 12: a link that drops every few KiB
# ---------------------------------------------------------------------------------------------------------


def test_link_dropping_every_few_kib_resumes_with_backoff(
    emulator: SeedanceEmulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 40 * 1024
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=4096, times=9))
    _, ti = run(source_urls=emulator.url(f"/files/generated/{size}.mp4"), dest_key=f"s3://{BUCKET}/clip.mp4")
    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    assert [r.status_code for r in downloads(emulator)] == [200] + [206] * 9
    lines = [line for line in capsys.readouterr().out.splitlines() if "resuming in" in line]
    delays = [float(line.split("resuming in ")[1].split(" s")[0]) for line in lines]
    assert len(delays) == 9
    assert all(delay >= 0.01 * 2**n for n, delay in enumerate(delays))  # doubling, never back to back


def test_link_dropping_too_often_fails_and_stores_nothing(emulator: SeedanceEmulator, s3: Any) -> None:
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=4096, times=None))
    with pytest.raises(SeedanceConnectionError, match="interrupted 4 times"):
        run(
            source_urls=emulator.url(f"/files/generated/{64 * 1024}.mp4"),
            dest_key=f"s3://{BUCKET}/clip.mp4",
            download_max_resumes=3,
        )
    assert len(downloads(emulator)) == 4
    assert_nothing_left(s3)


# -- a dead link answered with 200: a web page or nothing ----------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(kind="error_page", endpoint="download", times=None), "web page"),
        (
            Fault(
                kind="error_page",
                endpoint="download",
                body="<html><body>Please sign in</body></html>",
                times=None,
            ),
            "web page",
        ),
        (Fault(kind="empty_body", endpoint="download", times=None), "empty file"),
        (Fault(kind="empty_body", endpoint="download", hide_length=True, times=None), "empty file"),
    ],
    ids=["expired-page", "sign-in-page", "empty", "empty-chunked"],
)
def test_a_dead_link_answering_200_stores_nothing(
    emulator: SeedanceEmulator, s3: Any, fault: Fault, expected: str
) -> None:
    # CDNs answer a link they no longer serve with 200 too: a page, or no bytes. Neither is a video.
    emulator.add_fault(fault)
    with pytest.raises(SeedanceTransferError, match=expected) as caught:
        run(source_urls=emulator.url("/files/generated/4096.mp4"), dest_key=f"s3://{BUCKET}/clip.mp4")
    assert "Nothing was stored" in str(caught.value)
    assert len(downloads(emulator)) == 1  # a dead link is not asked again
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    ("connections", "good_ranges"), [(1, 0), (3, 1)], ids=["resume-gets-a-page", "ranges-get-pages"]
)
def test_a_link_dying_in_the_middle_of_a_multipart_copy_leaves_nothing(
    emulator: SeedanceEmulator, s3: Any, connections: int, good_ranges: int
) -> None:
    # The first answer is cut after a part was uploaded (one connection), or a first range is served (three);
    # every later answer, the resume or the other ranges, is the expiry page.
    size = 12 * MiB + 17
    emulator.add_fault(Fault(kind="truncated", endpoint="download", truncate_at_bytes=6 * MiB))
    emulator.add_fault(Fault(kind="error_page", endpoint="download", skip=good_ranges, times=None))
    with pytest.raises(SeedanceTransferError, match="web page"):
        run(
            source_urls=emulator.url(f"/files/generated/{size}.mp4"),
            dest_key=f"s3://{BUCKET}/big.mp4",
            part_size=5 * MiB,
            download_connections=connections,
        )
    assert_nothing_left(s3)


# -- a file name outside ASCII ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4096, 12 * MiB + 17], ids=["one-part", "multipart"])
def test_a_file_name_outside_ascii_is_copied_and_recorded_in_ascii(
    emulator: SeedanceEmulator, s3: Any, size: int
) -> None:
    # S3 metadata is ASCII only: botocore refused the whole copy when source-url held the name as is.
    url = emulator.url(f"/files/generated/{size}/视频 clip é.mp4")
    uris, ti = run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", part_size=5 * MiB)

    assert uris == [f"s3://{BUCKET}/clip.mp4"]
    head = s3.head_object(Bucket=BUCKET, Key="clip.mp4")
    assert head["ContentLength"] == size
    recorded = head["Metadata"]["source-url"]
    assert recorded == emulator.url(f"/files/generated/{size}/%E8%A7%86%E9%A2%91 clip %C3%A9.mp4")
    assert ti.xcom["objects"][0]["sha256"] == sha_of_generated(size)
    # The recorded identity is stable: a rerun recognises its own copy and downloads nothing more.
    fetched = len(downloads(emulator))
    _, again = run(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", part_size=5 * MiB)
    assert again.xcom["objects"][0]["skipped"] is True
    assert len(downloads(emulator)) == fetched
    assert_nothing_left(s3, ["clip.mp4"])
