"""Unit tests of the streaming download core: verification, resume, restart, retries, progress, URLs."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.exceptions import (
    SeedanceConnectionError,
    SeedanceServerError,
    SeedanceTransferError,
)
from airflow_provider_seedance.transfers._streaming import (
    DEFAULT_CONTENT_TYPE,
    SourceInfo,
    StreamingDownload,
    TransferProgress,
    check_source_url,
    human_bytes,
    new_download_client,
    redact_url,
    source_identity,
)
from tests.transfers._support import FileServer

READ_CHUNK_SIZE = 1024 * 1024
BODY = os.urandom(3 * READ_CHUNK_SIZE + 12345)
SHA = hashlib.sha256(BODY).hexdigest()


class RecordingSink:
    """A sink that keeps the bytes (tests only) and counts rewinds."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.rewinds = 0
        self.info: SourceInfo | None = None
        self.largest_write = 0

    def begin(self, source: SourceInfo) -> None:
        self.info = source

    def write(self, data: bytes) -> None:
        self.largest_write = max(self.largest_write, len(data))
        self.data += data

    def rewind(self) -> None:
        self.rewinds += 1
        self.data.clear()


@pytest.fixture
def client() -> Any:
    with new_download_client(timeout=5) as http:
        yield http


def download(url: str, client: httpx.Client, **kwargs: Any) -> tuple[Any, RecordingSink]:
    sink = RecordingSink()
    kwargs.setdefault("backoff", 0.01)
    job = StreamingDownload(url, client=client, **kwargs)
    try:
        return job.copy_to(sink), sink
    finally:
        job.close()


def test_download_is_verified_and_chunked(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, content_type="video/quicktime")
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.size == len(BODY)
    assert result.sha256 == SHA
    assert result.content_type == "video/quicktime"
    assert (result.resumes, result.restarts) == (0, 0)
    assert sink.largest_write <= 1024 * 1024  # network-sized chunks, never the whole body
    assert sink.info is not None
    assert sink.info.size == len(BODY)


def test_download_sends_no_credentials(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, drops={0: 1000})
    download(url, client)
    for seen in file_server.requests_for("/clip.mp4"):
        assert "authorization" not in seen.headers
        assert "cookie" not in seen.headers
        assert seen.headers["accept-encoding"] == "identity"


def test_missing_content_type_defaults_to_mp4(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip", BODY, content_type=None)
    result, _ = download(url, client)
    assert result.content_type == DEFAULT_CONTENT_TYPE


def test_dropped_connection_resumes_with_range(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, drops={0: READ_CHUNK_SIZE + 7, 1: 100}, headers={"ETag": '"v1"'})
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.sha256 == SHA
    assert result.resumes == 2
    assert sink.rewinds == 0
    seen = file_server.requests_for("/clip.mp4")
    assert [s.status for s in seen] == [200, 206, 206]
    assert "range" not in seen[0].headers
    assert seen[1].headers["range"] == f"bytes={READ_CHUNK_SIZE + 7}-"  # every received byte is kept
    assert seen[1].headers["if-range"] == '"v1"'


def test_server_without_ranges_restarts_from_zero(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, ranges=False, drops={0: 2 * READ_CHUNK_SIZE})
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.sha256 == SHA
    assert (result.resumes, result.restarts) == (0, 1)
    assert sink.rewinds == 1
    # "Accept-Ranges: none" was announced, so the second request does not even ask for a range.
    assert "range" not in file_server.requests_for("/clip.mp4")[1].headers


def test_ignored_range_restarts_from_zero(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add(
        "/clip.mp4", BODY, ranges=False, drops={0: READ_CHUNK_SIZE}, headers={"Accept-Ranges": "bytes"}
    )
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.restarts == 1
    assert file_server.requests_for("/clip.mp4")[1].headers["range"] == f"bytes={READ_CHUNK_SIZE}-"


def test_inconsistent_content_range_is_not_spliced(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, drops={0: 5000}, bad_content_range=True)
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.restarts == 1
    assert [s.status for s in file_server.requests_for("/clip.mp4")] == [200, 206, 200]


def test_transient_statuses_are_retried(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, statuses={0: 503, 1: 429, 2: 502})
    _, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert len(file_server.requests_for("/clip.mp4")) == 4


def test_persistent_server_errors_fail(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, statuses={n: 500 for n in range(10)})
    with pytest.raises(SeedanceServerError, match="HTTP 500"):
        download(url, client, max_retries=2)
    assert len(file_server.requests_for("/clip.mp4")) == 3


def test_expired_link_is_not_retried(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, statuses={0: 404})
    with pytest.raises(SeedanceTransferError, match="may have expired") as caught:
        download(url + "?X-Signature=secret", client)
    assert "secret" not in str(caught.value)
    assert len(file_server.requests_for("/clip.mp4")) == 1


def test_download_that_keeps_breaking_without_progress_fails(
    file_server: FileServer, client: httpx.Client
) -> None:
    # Every attempt breaks at the same byte on a server without ranges: no progress, so the budget runs out.
    url = file_server.add("/clip.mp4", BODY, ranges=False, drops={n: 1000 for n in range(20)})
    with pytest.raises(SeedanceConnectionError, match="broke off"):
        download(url, client, max_retries=2)
    # 1 attempt that advanced the high-water mark, then 1 + 2 retries that did not.
    assert len(file_server.requests_for("/clip.mp4")) == 4


def test_progress_renews_the_retry_budget(file_server: FileServer, client: httpx.Client) -> None:
    # Seven drops, each after some progress, with only one retry allowed: the download still completes.
    drops = {n: 400_000 for n in range(7)}
    url = file_server.add("/clip.mp4", BODY, drops=drops)
    result, sink = download(url, client, max_retries=1)
    assert bytes(sink.data) == BODY
    assert result.resumes == 7


def test_unknown_size_is_hashed_but_not_checked(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY, content_length=False)
    result, sink = download(url, client)
    assert sink.info is not None
    assert sink.info.size is None
    assert result.size == len(BODY)
    assert result.sha256 == SHA


def test_connection_refused_is_retried_then_fails(client: httpx.Client) -> None:
    from tests._support import free_port

    with pytest.raises(SeedanceConnectionError, match="ConnectError"):
        download(f"http://127.0.0.1:{free_port()}/clip.mp4", client, max_retries=1)


def test_open_reads_headers_without_the_body(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add(
        "/clip.mp4", BODY, headers={"ETag": 'W/"weak"', "Last-Modified": "Tue, 01 Jan 2030 00:00:00 GMT"}
    )
    job = StreamingDownload(url, client=client)
    try:
        info = job.open()
    finally:
        job.close()
    assert info.size == len(BODY)
    assert info.etag is None  # a weak ETag cannot be used in If-Range
    assert info.last_modified == "Tue, 01 Jan 2030 00:00:00 GMT"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://cdn.example.com/a/b.mp4?sig=secret&exp=1", "https://cdn.example.com/a/b.mp4?..."),
        ("https://user:pw@cdn.example.com:8443/b.mp4#frag", "https://cdn.example.com:8443/b.mp4"),
        ("http://127.0.0.1:8765/files/r/0.mp4", "http://127.0.0.1:8765/files/r/0.mp4"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in source_identity(url)
    assert "pw" not in source_identity(url)
    assert source_identity(url) == shown.removesuffix("?...")


@pytest.mark.parametrize(
    ("url", "identity"),
    [
        ("https://cdn.example.com/视频/é.mp4?sig=1", "https://cdn.example.com/%E8%A7%86%E9%A2%91/%C3%A9.mp4"),
        ("https://视频.example/a.mp4", "https://%E8%A7%86%E9%A2%91.example/a.mp4"),
        # ASCII is recorded exactly as before, escapes and spaces included (older copies still match).
        ("https://cdn.example.com/a%20b/c d.mp4?x=1", "https://cdn.example.com/a%20b/c d.mp4"),
    ],
    ids=["non-ascii-path", "non-ascii-host", "ascii-unchanged"],
)
def test_source_identity_is_ascii(url: str, identity: str) -> None:
    assert source_identity(url) == identity
    assert source_identity(url).isascii()


@pytest.mark.parametrize("bad", ["", "   ", "ftp://host/file", "/relative/path.mp4", "https://", None, 42])
def test_check_source_url_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="source URL"):
        check_source_url(bad)


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        ("https://ho st/a.mp4?sig=SECRET", "contains a space or an invisible character"),
        ("https://cdn.example.com/a\r\nHost: evil.example?sig=SECRET", "control character"),
        ("https://256.1.1.1/a.mp4", "not a valid IPv4 address"),
        ("https://user:pw@cdn.example.com:99999/a.mp4?sig=SECRET", "the port '99999' is not a number"),
        ("https://[::zz]/a.mp4", "does not appear to be an IPv4 or IPv6 address"),
    ],
)
def test_a_malformed_source_url_is_refused_naming_the_problem_and_no_secret(bad: str, rule: str) -> None:
    with pytest.raises(ValueError, match="a source URL must be well-formed") as info:
        check_source_url(bad)
    assert rule in str(info.value)
    for secret in ("SECRET", "pw"):
        assert secret not in str(info.value)


def test_human_bytes() -> None:
    assert human_bytes(12) == "12 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert human_bytes(5 * 1024**4) == "5120.0 GiB"


def test_progress_logs_at_steps_and_intervals(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.progress")
    progress = TransferProgress("a -> b", total=1000, logger=logger, min_interval=0.0, interval=3600)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for done in range(0, 1001, 25):
            progress.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 9  # 10%, 20% ... 90%; the end is logged by the operator
    assert "(10%)" in lines[0]
    assert "MB/s" in lines[0]

    caplog.clear()
    slow = TransferProgress("a -> b", total=None, logger=logger, interval=0.0)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        slow.update(10)
    assert "so far" in caplog.records[0].getMessage()


# ---------------------------------------------------------------------------------------------------------
# Issue 13, item 9: capped ranges and sizes that are never announced
# ---------------------------------------------------------------------------------------------------------


def test_capped_ranges_are_followed_to_the_announced_total(
    file_server: FileServer, client: httpx.Client
) -> None:
    # The first answer has no Content-Length and breaks; every 206 then carries at most 256 KiB.
    url = file_server.add(
        "/clip.mp4", BODY, content_length=False, chunked=True, drops={0: 100_000}, range_cap=256 * 1024
    )
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.size == len(BODY)
    assert result.sha256 == SHA
    assert result.resumes == 1  # one interruption; the capped answers that followed are no failures
    seen = file_server.requests_for("/clip.mp4")
    assert len(seen) == 1 + -(-(len(BODY) - 100_000) // (256 * 1024))
    assert all(s.status == 206 for s in seen[1:])


def test_resume_without_a_known_total_restarts_from_zero(
    file_server: FileServer, client: httpx.Client
) -> None:
    # "Content-Range: bytes 1000-1499/*" after an unsized break: the end of the file cannot be verified.
    url = file_server.add(
        "/clip.mp4",
        BODY,
        content_length=False,
        chunked=True,
        drops={0: 1000},
        range_cap=500,
        unknown_total=True,
    )
    result, sink = download(url, client)
    assert bytes(sink.data) == BODY
    assert result.restarts == 1
    assert [s.status for s in file_server.requests_for("/clip.mp4")] == [200, 206, 200]


def test_unknown_size_after_breaks_is_never_accepted(file_server: FileServer, client: httpx.Client) -> None:
    # Every answer breaks and none names the total: nothing may be called complete.
    url = file_server.add(
        "/clip.mp4",
        BODY,
        content_length=False,
        chunked=True,
        drops={n: 1000 for n in range(20)},
        range_cap=500,
        unknown_total=True,
    )
    with pytest.raises(SeedanceConnectionError):
        download(url, client, max_retries=2)


# ---------------------------------------------------------------------------------------------------------
# Issue 13, item 12: a link that drops every few KiB reconnects with backoff, a bounded number of times
# ---------------------------------------------------------------------------------------------------------


def resume_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [
        float(r.getMessage().split("resuming in ")[1].split(" s")[0])
        for r in caplog.records
        if "resuming in" in r.getMessage()
    ]


def test_resumes_back_off(
    file_server: FileServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    body = BODY[: 40 * 1024]
    url = file_server.add("/clip.mp4", body, drops={n: 4096 for n in range(9)})
    logger = logging.getLogger("test.resume")
    with caplog.at_level(logging.WARNING, logger="test.resume"):
        result, sink = download(url, client, backoff=0.005, logger=logger)
    assert bytes(sink.data) == body
    assert result.resumes == 9
    delays = resume_delays(caplog)
    assert len(delays) == 9
    # Doubling from the first delay (plus at most one first delay of jitter): never back to back.
    for number, delay in enumerate(delays):
        assert 0.005 * 2**number <= delay <= 0.005 * 2**number + 0.005 + 0.01


def test_resumes_are_bounded(file_server: FileServer, client: httpx.Client) -> None:
    url = file_server.add("/clip.mp4", BODY[: 64 * 1024], drops={n: 4096 for n in range(16)})
    with pytest.raises(SeedanceConnectionError, match="interrupted 4 times") as caught:
        download(url, client, max_resumes=3)
    assert "download_max_resumes" in str(caught.value)
    assert len(file_server.requests_for("/clip.mp4")) == 4
