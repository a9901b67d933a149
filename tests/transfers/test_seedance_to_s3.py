"""Tests of SeedanceToS3Operator against in-process moto S3 and the scriptable file server."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceIntegrityError,
    SeedanceTransferError,
)
from airflow_provider_seedance.transfers import _s3_writers, seedance_to_s3
from airflow_provider_seedance.transfers._base import parse_source_urls
from airflow_provider_seedance.transfers.seedance_to_s3 import (
    SeedanceToS3Operator,
    parse_s3_destination,
    staging_key_for,
)
from tests.transfers._support import BUCKET, MODES, FileServer, assert_nothing_left

MiB = 1024 * 1024
SMALL = os.urandom(300_000)
LARGE = os.urandom(11 * MiB + 4321)  # 3 parts at the smallest part size (5 MiB)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeTI:
    """Collect what the operator pushes to XCom."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def run(op: SeedanceToS3Operator) -> tuple[list[str], FakeTI]:
    ti = FakeTI()
    return op.execute({"ti": ti}), ti  # type: ignore[arg-type]


def make(**kwargs: Any) -> SeedanceToS3Operator:
    kwargs.setdefault("task_id", "store")
    kwargs.setdefault("download_retry_backoff", 0.01)
    return SeedanceToS3Operator(**kwargs)


def copy_big(url: str, key: str = "big.mp4", **kwargs: Any) -> tuple[list[str], FakeTI]:
    """
    Copy ``url`` to ``s3://BUCKET/<key>`` in 5 MiB parts (the smallest S3 takes); return what ``run`` does.

    :param url: the source.
    :param key: the destination key in :data:`BUCKET`.
    :param kwargs: further operator arguments.
    """
    return run(make(source_urls=url, dest_key=f"s3://{BUCKET}/{key}", part_size=5 * MiB, **kwargs))


def read(client: Any, key: str) -> tuple[bytes, dict[str, Any]]:
    answer = client.get_object(Bucket=BUCKET, Key=key)
    return answer["Body"].read(), answer


class FlakyClient:
    """Wrap a boto3 client; calls named in ``fail`` raise an injected S3 error when their predicate holds."""

    def __init__(self, client: Any, fail: dict[str, Callable[[dict[str, Any]], bool]]) -> None:
        self._client = client
        self._fail = fail
        self.calls: list[str] = []
        self.arguments: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            self.arguments.append((name, kwargs))
            predicate = self._fail.get(name)
            if predicate is not None and predicate(kwargs):
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected failure"}}, name)
            return attribute(**kwargs)

        return call


def use_client(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    monkeypatch.setattr(SeedanceToS3Operator, "_make_client", lambda self: client)


# ---------------------------------------------------------------------------------------------------------
# Arguments, validated before any network call
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "neither"),
        ({"request_id": "abc", "source_urls": "https://x.test/a.mp4"}, "both"),
        ({"source_urls": "ftp://x.test/a.mp4"}, "source_urls"),
        ({"source_urls": []}, "neither"),
        ({"source_urls": ["https://x.test/a.mp4", "nope"]}, r"source_urls\[1\]"),
        ({"request_id": "bad id!"}, "request_id"),
    ],
)
def test_source_arguments_are_checked_first(kwargs: dict[str, Any], match: str) -> None:
    op = make(dest_key="s3://bucket/key.mp4", **kwargs)
    with pytest.raises(SeedanceConfigurationError, match=match) as caught:
        op.execute({})  # type: ignore[arg-type]
    assert isinstance(caught.value, AirflowFailException)  # retrying cannot fix an argument


@pytest.mark.parametrize(
    ("bucket", "key", "expected"),
    [
        (None, "s3://videos/a/b.mp4", ("videos", "a/b.mp4")),
        ("videos", "a/b.mp4", ("videos", "a/b.mp4")),
        ("videos", "s3://videos/a/b.mp4", ("videos", "a/b.mp4")),
        ("  videos ", " a/{index}.mp4 ", ("videos", "a/{index}.mp4")),
    ],
)
def test_parse_s3_destination(bucket: str | None, key: str, expected: tuple[str, str]) -> None:
    assert parse_s3_destination(bucket, key) == expected


@pytest.mark.parametrize(
    ("bucket", "key", "match"),
    [
        (None, "a/b.mp4", "no bucket"),
        ("other", "s3://videos/a.mp4", "bucket in one place"),
        (None, "s3:///a.mp4", "has no bucket"),
        (None, "gs://videos/a.mp4", "not an s3:// URL"),
        ("videos", "a/folder/", "not a folder"),
        ("videos", "", "non-empty"),
        ("vid/eos", "a.mp4", "not a bucket name"),
    ],
)
def test_parse_s3_destination_errors(bucket: str | None, key: str, match: str) -> None:
    with pytest.raises(SeedanceConfigurationError, match=match):
        parse_s3_destination(bucket, key)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extra_args": {"Bucket": "x"}}, "not supported"),
        ({"extra_args": {"Metadata": {"SHA256": "x"}}}, "set by the operator"),
        ({"part_size": 1024}, "part_size"),
        ({"upload_concurrency": 0}, "upload_concurrency"),
        ({"staging_prefix": "/", "sha256_metadata": True}, "staging_prefix"),
        ({"staging": "disk", "sha256_metadata": True}, "staging"),
        ({"spool_dir": "/tmp", "sha256_metadata": True}, "only used with staging='local'"),
        # Staging only exists to store sha256 metadata: asking for it alone is a mistake, said early.
        ({"staging": "local"}, "staging: only used with sha256_metadata=True"),
        ({"staging_prefix": "tmp/"}, "staging_prefix: only used with sha256_metadata=True"),
        ({"sha256_metadata": "yes"}, "sha256_metadata"),
        ({"download_connections": 0}, "download_connections"),
        ({"download_connections": 17}, "download_connections"),
        ({"download_connections": True}, "download_connections"),
    ],
)
def test_constructor_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SeedanceConfigurationError, match=match):
        make(dest_key="s3://b/k.mp4", source_urls="https://x.test/a.mp4", **kwargs)


def test_rendered_list_of_urls_is_accepted() -> None:
    urls = ["https://cdn.test/a.mp4", "https://cdn.test/b.mp4"]
    assert parse_source_urls(str(urls)) == urls  # Jinja renders a list as its Python repr
    assert parse_source_urls('["https://cdn.test/a.mp4"]') == urls[:1]
    assert parse_source_urls(" https://cdn.test/a.mp4 ") == urls[:1]
    with pytest.raises(SeedanceConfigurationError, match="could not read"):
        parse_source_urls("[not a list")


def test_staging_key() -> None:
    key = staging_key_for("videos/2030/clip.mp4", None)
    assert key.startswith("videos/2030/.seedance-staging/clip.mp4.")
    assert key.endswith(".partial")
    assert staging_key_for("clip.mp4", None).startswith(".seedance-staging/clip.mp4.")
    assert staging_key_for("a/clip.mp4", "tmp/").startswith("tmp/clip.mp4.")
    assert staging_key_for("a/clip.mp4", None) != staging_key_for("a/clip.mp4", None)


def test_several_videos_without_index_fail_before_any_upload(s3: Any, file_server: FileServer) -> None:
    urls = [file_server.add(f"/{n}.mp4", SMALL) for n in range(2)]
    op = make(source_urls=urls, dest_key=f"s3://{BUCKET}/clip.mp4")
    with pytest.raises(SeedanceConfigurationError, match=r"\{index\}"):
        run(op)
    assert file_server.seen == []
    assert_nothing_left(s3)


def test_import_does_not_load_boto3() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_seedance.transfers.seedance_to_s3\n"
        "import airflow_provider_seedance.transfers.seedance_to_object_storage\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------
# Copies
# ---------------------------------------------------------------------------------------------------------


def test_small_file_is_one_verified_put(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/clip.mp4", SMALL, content_type="video/webm")
    uris, ti = run(make(source_urls=url + "?token=secret", dest_bucket=BUCKET, dest_key="a/clip.mp4"))
    assert uris == [f"s3://{BUCKET}/a/clip.mp4"]
    body, answer = read(s3, "a/clip.mp4")
    assert body == SMALL
    assert answer["ContentType"] == "video/webm"
    assert answer["Metadata"] == {"sha256": sha(SMALL), "source-url": url}  # no query string stored
    head = s3.head_object(Bucket=BUCKET, Key="a/clip.mp4", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(SMALL).digest()).decode()
    assert ti.xcom["objects"] == [
        {
            "uri": uris[0],
            "source_url": url,
            "size": len(SMALL),
            "sha256": sha(SMALL),
            "content_type": "video/webm",
            "skipped": False,
        }
    ]
    assert_nothing_left(s3, ["a/clip.mp4"])


STAGINGS = pytest.mark.parametrize("staging", ["s3", "local"])


@STAGINGS
def test_large_file_is_staged_and_published_verified(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch, staging: str, tmp_path: Path
) -> None:
    url = file_server.add("/big.mp4", LARGE, content_type=None)
    flaky = FlakyClient(s3, {})
    use_client(monkeypatch, flaky)
    spool = {"spool_dir": str(tmp_path)} if staging == "local" else {}
    dest = f"s3://{BUCKET}/v/big-{{index}}.mp4"
    uris, _ = run(
        make(
            source_urls=[url],
            dest_key=dest,
            part_size=5 * MiB,
            sha256_metadata=True,
            staging=staging,
            **spool,
        )
    )
    assert uris == [f"s3://{BUCKET}/v/big-0.mp4"]
    body, answer = read(s3, "v/big-0.mp4")
    assert sha(body) == sha(LARGE)
    assert answer["ContentType"] == "video/mp4"
    assert answer["Metadata"]["sha256"] == sha(LARGE)
    assert flaky.calls.count("upload_part") == 3
    # S3 staging publishes with a server-side copy; local staging uploads once, metadata included.
    assert ("copy_object" in flaky.calls) == (staging == "s3")
    checksums = s3.head_object(Bucket=BUCKET, Key="v/big-0.mp4", ChecksumMode="ENABLED")
    if staging == "s3":
        assert checksums["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(LARGE).digest()).decode()
    else:
        # The upload declared the parts' CRC32 at creation: S3 combines them instead of computing its
        # default full-object CRC64NVME over the whole file again.
        assert checksums["ChecksumCRC32"]
        assert "ChecksumCRC64NVME" not in checksums
    assert_nothing_left(s3, ["v/big-0.mp4"])
    assert list(tmp_path.iterdir()) == []


class S3Calls:
    """Record the S3 calls of a real boto3 client (name, parameters, no bodies) via botocore's events."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("before-parameter-build.s3.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, {k: v for k, v in params.items() if k != "Body"}))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [params for call, params in self.calls if call == name]

    def close(self) -> None:
        self.client.meta.events.unregister("before-parameter-build.s3.*", self._record)


@pytest.fixture
def s3_calls(s3: Any) -> Any:
    calls = S3Calls(s3)
    yield calls
    calls.close()


@pytest.mark.parametrize("connections", [1, 4])
def test_large_file_is_one_multipart_upload_to_the_final_key(
    s3: Any, s3_calls: S3Calls, file_server: FileServer, connections: int
) -> None:
    """The default for a file larger than one part: no staging object, no server-side copy, one pass."""
    url = file_server.add("/big.mp4", LARGE)
    uris, ti = copy_big(url, "v/big.mp4", download_connections=connections, request_id=None)
    names = [name for name, _ in s3_calls.calls]
    assert "CopyObject" not in names
    assert "UploadPartCopy" not in names
    # Every call names the final key: nothing was staged anywhere else.
    assert {params["Key"] for _, params in s3_calls.calls if "Key" in params} == {"v/big.mp4"}
    [create] = s3_calls.named("CreateMultipartUpload")
    assert create["Metadata"] == {"source-url": url}
    assert create["ContentType"] == "video/mp4"
    assert create["ChecksumAlgorithm"] == "CRC32"
    parts = s3_calls.named("UploadPart")
    assert sorted(p["PartNumber"] for p in parts) == [1, 2, 3]
    assert {p["ChecksumAlgorithm"] for p in parts} == {"CRC32"}
    assert len(s3_calls.named("CompleteMultipartUpload")) == 1
    assert "PutObject" not in names
    assert "DeleteObject" not in names
    body, answer = read(s3, "v/big.mp4")
    assert body == LARGE
    assert "sha256" not in answer["Metadata"]
    checksums = s3.head_object(Bucket=BUCKET, Key="v/big.mp4", ChecksumMode="ENABLED")
    # S3 combined the verified parts' CRC32 (declared at creation: no full-object CRC64NVME pass).
    assert checksums["ChecksumCRC32"]
    assert "ChecksumCRC64NVME" not in checksums
    # The SHA-256 is reported where Airflow users look for it.
    assert ti.xcom["objects"] == [
        {
            "uri": uris[0],
            "source_url": url,
            "size": len(LARGE),
            "sha256": sha(LARGE),
            "content_type": "video/mp4",
            "skipped": False,
        }
    ]
    assert_nothing_left(s3, ["v/big.mp4"])


def test_sha256_metadata_true_still_writes_the_metadata(
    s3: Any, s3_calls: S3Calls, file_server: FileServer
) -> None:
    url = file_server.add("/big.mp4", LARGE)
    copy_big(url, sha256_metadata=True)
    assert read(s3, "big.mp4")[1]["Metadata"] == {"sha256": sha(LARGE), "source-url": url}
    assert len(s3_calls.named("CopyObject")) == 1  # what the metadata costs with staging="s3"
    assert_nothing_left(s3, ["big.mp4"])


def test_file_of_exactly_one_part_is_one_put(s3: Any, s3_calls: S3Calls, file_server: FileServer) -> None:
    body = os.urandom(5 * MiB)
    url = file_server.add("/one.mp4", body, content_length=False)  # no size announced: streamed
    copy_big(url, "one.mp4")
    assert [name for name, _ in s3_calls.calls if name != "HeadObject"] == ["PutObject"]
    assert read(s3, "one.mp4")[1]["Metadata"]["sha256"] == sha(body)


# -- parallel ranged download ------------------------------------------------------------------------------


def ranges_asked(file_server: FileServer, path: str) -> list[str]:
    return [seen.headers["range"] for seen in file_server.requests_for(path) if "range" in seen.headers]


def test_parallel_download_fetches_each_part_once(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/big.mp4", LARGE, headers={"ETag": '"v1"'})
    copy_big(url, download_connections=3)
    assert read(s3, "big.mp4")[0] == LARGE
    size = len(LARGE)
    assert sorted(ranges_asked(file_server, "/big.mp4")) == sorted(
        [f"bytes=0-{5 * MiB - 1}", f"bytes={5 * MiB}-{10 * MiB - 1}", f"bytes={10 * MiB}-{size - 1}"]
    )
    # Every range is conditional on the first answer's validator: a changed file is never spliced.
    assert {seen.headers.get("if-range") for seen in file_server.requests_for("/big.mp4")[1:]} == {'"v1"'}
    assert_nothing_left(s3, ["big.mp4"])


@pytest.mark.parametrize(
    "options",
    [
        # One part's connection breaks (whichever part the second ranged request asks for: each is longer
        # than the cut): that part resumes where it stopped.
        {"drops": {2: 1 * MiB + 17}},
        {"range_cap": 1 * MiB + 3},  # a server capping its 206 answers: the rest is asked again
        {"ranges": False, "claims_ranges": True},  # claims ranges, answers 200: one stream instead
        {"bad_content_range": True},  # answers another range than asked: one stream instead
    ],
    ids=["dropped-part", "capped-ranges", "ignored-ranges", "wrong-content-range"],
)
@MODES
def test_parallel_download_is_byte_identical(
    s3: Any, file_server: FileServer, options: dict[str, Any], mode: dict[str, Any]
) -> None:
    url = file_server.add("/big.mp4", LARGE, **options)
    _, ti = copy_big(url, **mode)
    assert read(s3, "big.mp4")[0] == LARGE
    assert ti.xcom["objects"][0]["sha256"] == sha(LARGE)
    if "drops" in options:
        resumed = [r for r in ranges_asked(file_server, "/big.mp4") if int(r[6:].split("-")[0]) % MiB]
        assert len(resumed) == 1
    assert_nothing_left(s3, ["big.mp4"])


def assert_big_copy_fails(
    s3: Any, url: str, mode: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Copy ``url`` in 5 MiB parts with one download retry: it must fail with ``error`` and leave nothing."""
    with pytest.raises(error, match=message):
        copy_big(url, download_max_retries=1, **mode)
    assert_nothing_left(s3)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"statuses": {2: 404}}, SeedanceTransferError, "HTTP 404"),
        # Every ranged request breaks before its first byte: no progress, so the retry budget runs out.
        ({"drops": {n: 0 for n in range(1, 40)}}, SeedanceConnectionError, "broke off"),
    ],
    ids=["part-404", "part-keeps-breaking"],
)
@MODES
def test_parallel_download_failure_leaves_nothing(
    s3: Any,
    file_server: FileServer,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
    mode: dict[str, Any],
) -> None:
    url = file_server.add("/big.mp4", LARGE, **options)
    assert_big_copy_fails(s3, url, mode, error, message)


def test_extra_args_reach_the_final_object(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/big.mp4", LARGE)
    copy_big(
        url,
        extra_args={
            "ContentType": "video/x-custom",
            "CacheControl": "max-age=60",
            "Metadata": {"team": "growth"},
            "StorageClass": "STANDARD_IA",
        },
    )
    head = s3.head_object(Bucket=BUCKET, Key="big.mp4")
    assert head["ContentType"] == "video/x-custom"
    assert head["CacheControl"] == "max-age=60"
    assert head["StorageClass"] == "STANDARD_IA"
    # One pass: the metadata known up front, no sha256 (it is reported, not stored).
    assert head["Metadata"] == {"team": "growth", "source-url": url}


@MODES
@pytest.mark.parametrize("connections", [1, 4])
def test_upload_part_failure_aborts_and_leaves_nothing(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch, mode: dict[str, Any], connections: int
) -> None:
    url = file_server.add("/big.mp4", LARGE)
    flaky = FlakyClient(s3, {"upload_part": lambda kw: kw["PartNumber"] == 2})
    use_client(monkeypatch, flaky)
    with pytest.raises(SeedanceTransferError, match="UploadPart 2 failed"):
        copy_big(url, download_connections=connections, **mode)
    assert "abort_multipart_upload" in flaky.calls
    assert_nothing_left(s3)


def test_copy_failure_deletes_the_staging_object(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = file_server.add("/big.mp4", LARGE)
    use_client(monkeypatch, FlakyClient(s3, {"copy_object": lambda kw: True}))
    with pytest.raises(SeedanceTransferError, match="CopyObject failed"):
        copy_big(url, sha256_metadata=True)
    assert_nothing_left(s3)


def test_put_failure_leaves_the_previous_object(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=BUCKET, Key="clip.mp4", Body=b"previous")
    url = file_server.add("/clip.mp4", SMALL)
    use_client(monkeypatch, FlakyClient(s3, {"put_object": lambda kw: True}))
    with pytest.raises(SeedanceTransferError, match="PutObject failed"):
        run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", replace=True))
    assert read(s3, "clip.mp4")[0] == b"previous"
    assert_nothing_left(s3, ["clip.mp4"])


@pytest.mark.parametrize(
    ("body", "staging", "tampered", "message"),
    [
        (SMALL, None, "clip.mp4", "failed verification"),
        (LARGE, None, "clip.mp4", "failed verification"),
        (SMALL, "s3", "clip.mp4", "failed verification"),
        (LARGE, "s3", "clip.mp4", "failed verification"),
        (LARGE, "s3", ".partial", "not published"),
        (LARGE, "local", "clip.mp4", "failed verification"),
    ],
)
def test_failed_verification_removes_the_object(
    s3: Any,
    file_server: FileServer,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    staging: str | None,
    tampered: str,
    message: str,
) -> None:
    url = file_server.add("/clip.mp4", body)

    class Tampering(FlakyClient):
        def head_object(self, **kwargs: Any) -> Any:
            answer = self._client.head_object(**kwargs)
            if kwargs["Key"].endswith(tampered):
                answer["ContentLength"] += 1
            return answer

    use_client(monkeypatch, Tampering(s3, {}))
    mode = {} if staging is None else {"sha256_metadata": True, "staging": staging}
    with pytest.raises(SeedanceIntegrityError, match=message):
        copy_big(url, "clip.mp4", **mode)
    assert_nothing_left(s3)


@MODES
def test_download_failing_midway_leaves_nothing(
    s3: Any, file_server: FileServer, mode: dict[str, Any]
) -> None:
    # Breaks after 7 MiB every time on a server without ranges: a part was already staged.
    url = file_server.add("/big.mp4", LARGE, ranges=False, drops={n: 7 * MiB for n in range(10)})
    assert_big_copy_fails(s3, url, mode, SeedanceConnectionError, "broke off")


@MODES
def test_restart_from_zero_rewrites_the_parts(s3: Any, file_server: FileServer, mode: dict[str, Any]) -> None:
    url = file_server.add("/big.mp4", LARGE, ranges=False, drops={0: 7 * MiB})
    copy_big(url, **mode)
    assert sha(read(s3, "big.mp4")[0]) == sha(LARGE)
    assert_nothing_left(s3, ["big.mp4"])


@MODES
def test_resume_keeps_the_staged_parts(s3: Any, file_server: FileServer, mode: dict[str, Any]) -> None:
    url = file_server.add("/big.mp4", LARGE, drops={0: 6 * MiB + 3, 1: 3 * MiB})
    copy_big(url, download_connections=1, **mode)
    assert sha(read(s3, "big.mp4")[0]) == sha(LARGE)
    assert [s.status for s in file_server.requests_for("/big.mp4")] == [200, 206, 206]
    assert_nothing_left(s3, ["big.mp4"])


def test_expired_source_fails_without_upload(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/gone.mp4", SMALL, statuses={0: 403})
    with pytest.raises(SeedanceTransferError, match="HTTP 403"):
        run(make(source_urls=url, dest_key=f"s3://{BUCKET}/gone.mp4"))
    assert_nothing_left(s3)


def test_objects_above_the_copy_limit_use_a_multipart_copy(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_s3_writers, "S3_COPY_OBJECT_MAX_BYTES", 6 * MiB)
    monkeypatch.setattr(_s3_writers, "S3_COPY_PART_SIZE", 5 * MiB)
    flaky = FlakyClient(s3, {})
    use_client(monkeypatch, flaky)
    url = file_server.add("/big.mp4", LARGE)
    copy_big(url, sha256_metadata=True)
    body, answer = read(s3, "big.mp4")
    assert sha(body) == sha(LARGE)
    assert answer["Metadata"]["sha256"] == sha(LARGE)
    assert answer["ContentType"] == "video/mp4"
    assert flaky.calls.count("upload_part_copy") == 3
    assert_nothing_left(s3, ["big.mp4"])


def test_multipart_copy_failure_is_aborted(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_s3_writers, "S3_COPY_OBJECT_MAX_BYTES", 6 * MiB)
    monkeypatch.setattr(_s3_writers, "S3_COPY_PART_SIZE", 5 * MiB)
    use_client(monkeypatch, FlakyClient(s3, {"upload_part_copy": lambda kw: kw["PartNumber"] == 3}))
    url = file_server.add("/big.mp4", LARGE)
    with pytest.raises(SeedanceTransferError, match="UploadPartCopy 3"):
        copy_big(url, sha256_metadata=True)
    assert_nothing_left(s3)


def test_versioned_bucket_keeps_no_staging_versions(s3: Any, file_server: FileServer) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    url = file_server.add("/big.mp4", LARGE)
    copy_big(url, sha256_metadata=True)
    versions = s3.list_object_versions(Bucket=BUCKET)
    assert [v["Key"] for v in versions.get("Versions", [])] == ["big.mp4"]
    assert versions.get("DeleteMarkers", []) == []


def test_staging_prefix(s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = FlakyClient(s3, {})
    use_client(monkeypatch, flaky)
    url = file_server.add("/big.mp4", LARGE)
    copy_big(url, "v/big.mp4", sha256_metadata=True, staging_prefix="tmp/up")
    staged = [kw["Key"] for name, kw in flaky.arguments if name == "create_multipart_upload"]
    assert len(staged) == 1
    assert staged[0].startswith("tmp/up/big.mp4.")
    assert_nothing_left(s3, ["v/big.mp4"])


def test_amazon_provider_missing_falls_back_to_boto3(
    s3: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real client factory, inside the moto mock
    monkeypatch.setattr(seedance_to_s3, "_s3_hook_class", lambda: None)
    url = file_server.add("/clip.mp4", SMALL)
    uris, _ = run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", region_name="us-east-1"))
    assert read(s3, "clip.mp4")[0] == SMALL
    assert uris == [f"s3://{BUCKET}/clip.mp4"]


# ---------------------------------------------------------------------------------------------------------
# Idempotent reruns
# ---------------------------------------------------------------------------------------------------------


@MODES
def test_rerun_with_replace_false_skips_the_same_copy(
    s3: Any, file_server: FileServer, mode: dict[str, Any]
) -> None:
    url = file_server.add("/big.mp4", LARGE)
    op = make(source_urls=url + "?sig=1", dest_key=f"s3://{BUCKET}/big.mp4", part_size=5 * MiB, **mode)
    run(op)
    first = s3.head_object(Bucket=BUCKET, Key="big.mp4")
    # A retry gets a freshly signed link for the same file: still the same copy.
    uris, ti = copy_big(url + "?sig=2")
    second = s3.head_object(Bucket=BUCKET, Key="big.mp4")
    assert uris == [f"s3://{BUCKET}/big.mp4"]
    assert ti.xcom["objects"][0]["skipped"] is True
    # A skipped copy reports what the object records: its sha256 metadata where it has one.
    assert ti.xcom["objects"][0]["sha256"] == (sha(LARGE) if mode else None)
    assert second["LastModified"] == first["LastModified"]
    assert_nothing_left(s3, ["big.mp4"])


def test_rerun_after_the_link_expired_keeps_the_copy(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/clip.mp4", SMALL, statuses={1: 404})
    run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    _, ti = run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    assert ti.xcom["objects"][0]["skipped"] is True


def test_rerun_without_content_length_compares_the_hash(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/clip.mp4", SMALL, content_length=False)
    run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    _, ti = run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    assert ti.xcom["objects"][0]["skipped"] is True
    file_server.routes["/clip.mp4"].body = SMALL[::-1]
    with pytest.raises(SeedanceTransferError, match="source now differs"):
        run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))


def test_existing_foreign_object_fails_before_any_download(s3: Any, file_server: FileServer) -> None:
    s3.put_object(Bucket=BUCKET, Key="clip-1.mp4", Body=b"someone else's")
    urls = [file_server.add(f"/{n}.mp4", SMALL) for n in range(2)]
    with pytest.raises(SeedanceTransferError, match="no source-url metadata"):
        run(make(source_urls=urls, dest_key=f"s3://{BUCKET}/clip-{{index}}.mp4"))
    assert file_server.seen == []
    assert_nothing_left(s3, ["clip-1.mp4"])


def test_existing_copy_of_another_source_fails(s3: Any, file_server: FileServer) -> None:
    first = file_server.add("/a.mp4", SMALL)
    second = file_server.add("/b.mp4", SMALL)
    run(make(source_urls=first, dest_key=f"s3://{BUCKET}/clip.mp4"))
    with pytest.raises(SeedanceTransferError, match="records source-url"):
        run(make(source_urls=second, dest_key=f"s3://{BUCKET}/clip.mp4"))


def test_changed_source_size_fails(s3: Any, file_server: FileServer) -> None:
    url = file_server.add("/clip.mp4", SMALL)
    run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    file_server.routes["/clip.mp4"].body = SMALL + b"more"
    with pytest.raises(SeedanceTransferError, match="source now differs"):
        run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4"))
    assert read(s3, "clip.mp4")[0] == SMALL


def test_replace_true_overwrites(s3: Any, file_server: FileServer) -> None:
    s3.put_object(Bucket=BUCKET, Key="clip.mp4", Body=b"old")
    url = file_server.add("/clip.mp4", SMALL)
    run(make(source_urls=url, dest_key=f"s3://{BUCKET}/clip.mp4", replace=True))
    body, answer = read(s3, "clip.mp4")
    assert body == SMALL
    assert answer["Metadata"]["sha256"] == sha(SMALL)


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------


class CountingS3:
    """A stand-in S3 client that keeps only sizes, so tracemalloc sees the operator's own memory."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.total = 0
        self.metadata: dict[str, str] = {}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "u1"}

    def upload_part(self, *, PartNumber: int, Body: bytes, **kwargs: Any) -> dict[str, Any]:
        self.sizes[PartNumber] = len(Body)
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.total = sum(self.sizes.values())
        return {}

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"ContentLength": self.total, "Metadata": self.metadata}

    def copy_object(self, *, Metadata: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        self.metadata = Metadata
        return {}

    def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        return {}


def peak_traced_bytes(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch, size: int, connections: int = 1
) -> int:
    body = bytes(size)
    url = file_server.add(f"/zeros-{size}.mp4", body)
    fake = CountingS3()
    use_client(monkeypatch, fake)
    op = make(
        source_urls=url,
        dest_key=f"s3://{BUCKET}/big.mp4",
        part_size=5 * MiB,
        replace=True,
        download_connections=connections,
    )
    tracemalloc.start()
    try:
        run(op)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert fake.total == size


def test_memory_does_not_grow_with_the_file(file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    small = peak_traced_bytes(file_server, monkeypatch, 20 * MiB)
    large = peak_traced_bytes(file_server, monkeypatch, 60 * MiB)
    # A loose bound (the benchmark measures real RSS): a few 5 MiB parts, never the file.
    assert large < 5 * 5 * MiB
    assert large < small + 5 * MiB


def test_parallel_memory_is_bounded_by_connections_and_parts_in_flight(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool holds (connections + upload_concurrency) part buffers however many parts the file has (how
    # many get allocated depends on thread timing, so the bound, not a comparison, is what is checked).
    large = peak_traced_bytes(file_server, monkeypatch, 100 * MiB, connections=4)
    assert large <= (4 + 4 + 1) * 5 * MiB
