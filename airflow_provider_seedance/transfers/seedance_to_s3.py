"""Copy Seedance videos (or any http(s) file) into S3: streamed, verified, atomic, idempotent.

How a file lands in S3, and why nothing is ever left behind:

* A file that fits in one part (:data:`~._streaming.DEFAULT_PART_SIZE`, 8 MiB; most Seedance clips) is
  sent with one ``PutObject`` straight to the final key, carrying its metadata and a ``ChecksumSHA256``
  that S3 verifies on receipt. ``PutObject`` is atomic: the key holds the old object or the new one.
* A larger file is streamed as a multipart upload to a *staging* key (``<dir>/.seedance-staging/<name>.
  <uuid>.partial``), because S3 fixes user metadata when the upload is created and the ``sha256`` is only
  known at the end. Once every byte is in and counted, the staging object is copied server side to the
  final key with ``MetadataDirective=REPLACE`` (``CopyObject`` up to 5 GiB, a multipart ``UploadPartCopy``
  above), which sets ``sha256``, ``source-url`` and ``ContentType`` and makes the final object appear at
  once, complete. S3 computes the copy's own SHA-256 (``ChecksumAlgorithm=SHA256``), which is compared with
  ours. The staging object is then deleted (its exact version, in a versioned bucket).
* On any failure (download, upload, verification, a kill signal) the writer waits for in-flight parts,
  aborts the multipart upload(s) and deletes the staging object. The final key is only ever written by an
  atomic call, so it never holds a partial file. (A worker killed with ``SIGKILL`` cannot clean up: an S3
  lifecycle rule with ``AbortIncompleteMultipartUpload`` and an expiry on ``.seedance-staging/`` covers it.)

``boto3`` and the Amazon provider are imported only when the operator runs.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceIntegrityError,
    SeedanceTransferError,
)
from airflow_provider_seedance.transfers._base import (
    REQUEST_ID_METADATA_KEY,
    SHA256_METADATA_KEY,
    SOURCE_URL_METADATA_KEY,
    ExistingCopy,
    SeedanceTransferBaseOperator,
    TransferSource,
    TransferWriter,
    expand_index,
)
from airflow_provider_seedance.transfers._streaming import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    DownloadResult,
    MiB,
    SourceInfo,
)

GiB = 1024 * MiB

S3_MAX_PARTS = 10_000
"""S3's limit of parts per multipart upload; the part size grows for files above 78 GiB (at 8 MiB)."""

S3_MAX_PART_SIZE = 5 * GiB
"""S3's largest part."""

S3_COPY_OBJECT_MAX_BYTES = 5 * GiB
"""The largest object ``CopyObject`` accepts; above it the staging object is copied in parts."""

S3_COPY_PART_SIZE = 512 * MiB
"""Part size of the server-side multipart copy of objects above :data:`S3_COPY_OBJECT_MAX_BYTES`."""

DEFAULT_UPLOAD_CONCURRENCY = 2
"""Parts uploaded while the next one downloads: overlaps network legs, memory (1 + this) x part size."""

STAGING_DIR = ".seedance-staging"
"""Folder, next to the final key, holding multipart uploads until they are verified and published."""

STAGING_SUFFIX = ".partial"
"""Suffix of staging keys, so suffix-filtered S3 event notifications (``.mp4``) ignore them."""

ALLOWED_EXTRA_ARGS = frozenset(
    {
        "ACL",
        "BucketKeyEnabled",
        "CacheControl",
        "ContentDisposition",
        "ContentLanguage",
        "ContentType",
        "Metadata",
        "ObjectLockLegalHoldStatus",
        "ObjectLockMode",
        "ObjectLockRetainUntilDate",
        "SSEKMSEncryptionContext",
        "SSEKMSKeyId",
        "ServerSideEncryption",
        "StorageClass",
        "Tagging",
    }
)
"""``extra_args`` accepted for the final object (the arguments PutObject, CopyObject and CreateMultipartUpload share)."""

STAGING_EXTRA_ARGS = frozenset(
    {"BucketKeyEnabled", "SSEKMSEncryptionContext", "SSEKMSKeyId", "ServerSideEncryption"}
)
"""The subset also applied to staging objects: encrypted like the final object, but never locked, tagged
or put in an archive storage class (which would bill a minimum duration for a temporary object)."""

RESERVED_METADATA = frozenset({SHA256_METADATA_KEY, SOURCE_URL_METADATA_KEY, REQUEST_ID_METADATA_KEY})


def parse_s3_destination(dest_bucket: str | None, dest_key: str) -> tuple[str, str]:
    """
    Return ``(bucket, key)`` from ``dest_bucket`` and ``dest_key`` (which may be an ``s3://bucket/key`` URL).

    :param dest_bucket: the bucket, or ``None`` when ``dest_key`` is an ``s3://`` URL.
    :param dest_key: the key, or an ``s3://bucket/key`` URL.
    """
    if not isinstance(dest_key, str) or not dest_key.strip():
        raise SeedanceConfigurationError("dest_key: must be a non-empty S3 key or s3://bucket/key URL.")
    key = dest_key.strip()
    bucket = dest_bucket.strip() if isinstance(dest_bucket, str) and dest_bucket.strip() else None
    scheme, sep, rest = key.partition("://")
    if sep:
        if scheme.lower() not in ("s3", "s3a", "s3n"):
            raise SeedanceConfigurationError(f"dest_key: {key!r} is not an s3:// URL.")
        url_bucket, _, key = rest.partition("/")
        if not url_bucket:
            raise SeedanceConfigurationError(f"dest_key: {dest_key!r} has no bucket.")
        if bucket is not None and bucket != url_bucket:
            raise SeedanceConfigurationError(
                f"dest_bucket is {bucket!r} but dest_key {dest_key!r} names bucket {url_bucket!r}; give the "
                "bucket in one place only (or the same bucket in both)."
            )
        bucket = url_bucket
    if bucket is None:
        raise SeedanceConfigurationError(
            f"dest_bucket: no bucket given; set dest_bucket or use an s3://bucket/key URL as dest_key "
            f"(got dest_key={dest_key!r})."
        )
    if "/" in bucket:
        raise SeedanceConfigurationError(f"dest_bucket: {bucket!r} is not a bucket name (it contains '/').")
    if not key or key.endswith("/"):
        raise SeedanceConfigurationError(
            f"dest_key: {dest_key!r} must name an object, not a folder (add a file name, e.g. "
            "'videos/clip-{index}.mp4')."
        )
    return bucket, key


def split_s3_uri(uri: str) -> tuple[str, str]:
    """
    Split ``s3://bucket/key`` into ``(bucket, key)``.

    :param uri: the URI.
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def staging_key_for(key: str, staging_prefix: str | None) -> str:
    """
    Return a unique staging key for ``key``: in ``.seedance-staging/`` beside it, or under ``staging_prefix``.

    :param key: the final key.
    :param staging_prefix: a prefix for staging objects, or ``None`` for the folder next to the final key.
    """
    folder, _, name = key.rpartition("/")
    unique = f"{name}.{uuid.uuid4().hex}{STAGING_SUFFIX}"
    if staging_prefix is not None:
        return f"{staging_prefix}{unique}"
    return f"{folder}/{STAGING_DIR}/{unique}" if folder else f"{STAGING_DIR}/{unique}"


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status else None


def _s3_hook_class() -> Any:
    """Return the Amazon provider's ``S3Hook`` class, or ``None`` when the provider is not installed."""
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError:
        return None
    return S3Hook


@contextmanager
def _s3_errors(action: str, uri: str) -> Iterator[None]:
    """Turn boto errors into a SeedanceTransferError that says which call failed where."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise SeedanceTransferError(f"S3 {action} failed for {uri}: {exc}") from exc


class S3StagedWriter:
    """
    Write one file to S3 as described in the module docstring: one PutObject, or staging + copy.

    Memory is bounded by ``(1 + concurrency) * part_size`` whatever the file size.

    :param client: a boto3 S3 client.
    :param bucket: the destination bucket.
    :param key: the final key.
    :param staging_key: where a multipart upload is staged.
    :param metadata: user metadata of the final object (``sha256`` is added at commit).
    :param extra_args: validated ``extra_args`` for the final object.
    :param part_size: bytes per part (>= 5 MiB).
    :param concurrency: parts uploaded in the background while the download goes on.
    :param logger: where to log.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        staging_key: str,
        metadata: Mapping[str, str],
        extra_args: Mapping[str, Any] | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        logger: Any = None,
    ) -> None:
        import logging

        self.client = client
        self.bucket = bucket
        self.key = key
        self.staging_key = staging_key
        self.metadata = dict(metadata)
        self.extra_args = dict(extra_args or {})
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.log = logger or logging.getLogger(__name__)
        self.uri = f"s3://{bucket}/{key}"
        self.staging_uri = f"s3://{bucket}/{staging_key}"
        self.content_type = str(self.extra_args.pop("ContentType", "") or "")
        self.content_encoding: str | None = None
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_part = 1
        self._inflight: deque[Future[None]] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._staged_version: str | None = None
        self._staged = False
        self._copy_upload_id: str | None = None
        self._final_written = False

    # -- DownloadSink ------------------------------------------------------------------------------------

    def begin(self, source: SourceInfo) -> None:
        """
        Take the source's content type and, for a huge announced size, grow the part size to fit 10,000 parts.

        :param source: what the source announced.
        """
        self.content_type = self.content_type or source.content_type
        self.content_encoding = source.content_encoding
        if source.size and math.ceil(source.size / self.part_size) > S3_MAX_PARTS:
            needed = math.ceil(source.size / S3_MAX_PARTS / MiB) * MiB
            if needed > S3_MAX_PART_SIZE:
                raise SeedanceTransferError(
                    f"{source.size} bytes is more than S3 accepts in one object (5 TiB); not copied."
                )
            self.log.info(
                "Using %d MiB parts so that %d bytes fit in 10,000 parts.", needed // MiB, source.size
            )
            self.part_size = needed

    def write(self, data: bytes) -> None:
        """
        Buffer ``data``; every full part is handed to a background upload.

        :param data: the next bytes of the file.
        """
        view = memoryview(data)
        while view:
            room = self.part_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self.part_size:
                part, self._buffer = self._buffer, bytearray()
                self._submit(part)

    def rewind(self) -> None:
        """Start the file again: later parts overwrite the earlier ones, which complete will ignore."""
        self._drain(raise_errors=False)
        self._buffer = bytearray()
        self._parts.clear()
        self._next_part = 1

    # -- TransferWriter ------------------------------------------------------------------------------------

    def commit(self, result: DownloadResult) -> None:
        """
        Publish the verified file at the final key with its ``sha256`` and ``source-url`` metadata.

        :param result: the finished download.
        """
        final_args: dict[str, Any] = {
            **self.extra_args,
            "ContentType": self.content_type or result.content_type,
            "Metadata": {
                **dict(self.extra_args.get("Metadata") or {}),
                **self.metadata,
                SHA256_METADATA_KEY: result.sha256,
            },
        }
        if self.content_encoding:
            final_args["ContentEncoding"] = self.content_encoding
        if self._upload_id is None:
            with _s3_errors("PutObject", self.uri):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=bytes(self._buffer),
                    # S3 recomputes the SHA-256 of what it received and rejects the object on a mismatch.
                    ChecksumSHA256=_b64(result.sha256),
                    **final_args,
                )
            self._final_written = True
        else:
            self._complete_staging(result)
            self._publish_staging(result, final_args)
        self._verify_final(result)
        self._buffer = bytearray()

    def abort(self) -> None:
        """Remove every trace of this write: in-flight parts, multipart uploads, staging and unverified objects."""
        self._drain(raise_errors=False)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._upload_id is not None:
            self._quietly(
                "abort the staging multipart upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.staging_key,
                UploadId=self._upload_id,
            )
            self._upload_id = None
        if self._copy_upload_id is not None:
            self._quietly(
                "abort the multipart copy",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._copy_upload_id,
            )
            self._copy_upload_id = None
        if self._staged:
            self._delete_staging()
        if self._final_written:
            # Only reached when the final object failed verification: it must not stay.
            self._quietly(
                "delete the unverified object", self.client.delete_object, Bucket=self.bucket, Key=self.key
            )
            self._final_written = False
        self._buffer = bytearray()

    # -- internals ---------------------------------------------------------------------------------------

    def _submit(self, part: bytearray) -> None:
        if self._upload_id is None:
            with _s3_errors("CreateMultipartUpload", self.staging_uri):
                answer = self.client.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.staging_key,
                    ChecksumAlgorithm="CRC32",
                    **{k: v for k, v in self.extra_args.items() if k in STAGING_EXTRA_ARGS},
                )
            self._upload_id = answer["UploadId"]
            self.log.info(
                "Staging the upload at %s (multipart, %d MiB parts).", self.staging_uri, self.part_size // MiB
            )
        if self._next_part > S3_MAX_PARTS:
            raise SeedanceTransferError(
                f"{self.uri}: the file needs more than {S3_MAX_PARTS} parts of {self.part_size} bytes; raise "
                "part_size (the source did not announce its size, so it could not be chosen upfront)."
            )
        # Bound the parts held in memory: wait for the oldest upload before queueing another.
        while len(self._inflight) >= self.concurrency:
            self._inflight.popleft().result()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="seedance-s3"
            )
        number = self._next_part
        self._next_part += 1
        self._inflight.append(self._executor.submit(self._upload_part, number, part))

    def _upload_part(self, number: int, body: bytearray) -> None:
        with _s3_errors(f"UploadPart {number}", self.staging_uri):
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.staging_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC32",
            )
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if answer.get("ChecksumCRC32"):
            entry["ChecksumCRC32"] = answer["ChecksumCRC32"]
        self._parts[number] = entry

    def _drain(self, *, raise_errors: bool = True) -> None:
        while self._inflight:
            future = self._inflight.popleft()
            if raise_errors:
                future.result()
            else:
                future.cancel()
                try:
                    future.result()
                except BaseException:  # already failing or rewinding: the part is discarded anyway
                    self.log.debug("Discarded a failed part upload.", exc_info=True)

    def _complete_staging(self, result: DownloadResult) -> None:
        if self._buffer:
            part, self._buffer = self._buffer, bytearray()
            self._submit(part)
        self._drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        parts = [self._parts[n] for n in range(1, self._next_part)]
        with _s3_errors("CompleteMultipartUpload", self.staging_uri):
            answer = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.staging_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        self._upload_id = None
        self._staged = True
        version = answer.get("VersionId")
        self._staged_version = version if version and version != "null" else None
        with _s3_errors("HeadObject", self.staging_uri):
            staged_size = self.client.head_object(Bucket=self.bucket, Key=self.staging_key)["ContentLength"]
        if staged_size != result.size:
            raise SeedanceIntegrityError(
                f"{self.staging_uri} holds {staged_size} bytes but {result.size} were downloaded; not published."
            )

    def _publish_staging(self, result: DownloadResult, final_args: dict[str, Any]) -> None:
        source: dict[str, str] = {"Bucket": self.bucket, "Key": self.staging_key}
        if self._staged_version:
            source["VersionId"] = self._staged_version
        if "Tagging" in final_args:
            final_args = {**final_args, "TaggingDirective": "REPLACE"}
        if result.size <= S3_COPY_OBJECT_MAX_BYTES:
            with _s3_errors("CopyObject", self.uri):
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    CopySource=source,
                    MetadataDirective="REPLACE",
                    # S3 computes the copy's full SHA-256 itself: compared with ours in _verify_final.
                    ChecksumAlgorithm="SHA256",
                    **final_args,
                )
        else:
            self._multipart_copy(source, result.size, final_args)
        # From here until verification passes, a failure must remove the object we just published.
        self._final_written = True
        self._delete_staging()

    def _multipart_copy(self, source: dict[str, str], size: int, final_args: dict[str, Any]) -> None:
        create_args = {k: v for k, v in final_args.items() if k != "TaggingDirective"}
        with _s3_errors("CreateMultipartUpload (copy)", self.uri):
            self._copy_upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **create_args
            )["UploadId"]
        parts: list[dict[str, Any]] = []
        part_size = max(S3_COPY_PART_SIZE, math.ceil(size / S3_MAX_PARTS))
        for number, start in enumerate(range(0, size, part_size), start=1):
            end = min(start + part_size, size) - 1
            with _s3_errors(f"UploadPartCopy {number}", self.uri):
                answer = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._copy_upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        with _s3_errors("CompleteMultipartUpload (copy)", self.uri):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._copy_upload_id,
                MultipartUpload={"Parts": parts},
            )
        self._copy_upload_id = None

    def _verify_final(self, result: DownloadResult) -> None:
        with _s3_errors("HeadObject", self.uri):
            head = self.client.head_object(Bucket=self.bucket, Key=self.key, ChecksumMode="ENABLED")
        problems = []
        if head.get("ContentLength") != result.size:
            problems.append(f"size {head.get('ContentLength')} instead of {result.size}")
        if (head.get("Metadata") or {}).get(SHA256_METADATA_KEY) != result.sha256:
            problems.append("sha256 metadata missing or different")
        checksum = head.get("ChecksumSHA256")
        # A composite checksum ("...-N") of a multipart object is not the file's SHA-256: skip it.
        if checksum and "-" not in checksum and checksum != _b64(result.sha256):
            problems.append("S3's own SHA-256 of the object differs from the downloaded bytes")
        if problems:
            raise SeedanceIntegrityError(f"{self.uri} failed verification: {'; '.join(problems)}.")
        self._final_written = False

    def _delete_staging(self) -> None:
        args: dict[str, str] = {"Bucket": self.bucket, "Key": self.staging_key}
        if self._staged_version:
            # Deleting the exact version leaves nothing in a versioned bucket (not even a delete marker).
            args["VersionId"] = self._staged_version
        if self._quietly("delete the staging object", self.client.delete_object, **args):
            self._staged = False

    def _quietly(self, what: str, call: Any, **kwargs: Any) -> bool:
        try:
            call(**kwargs)
        except Exception as exc:
            self.log.error(
                "Could not %s (s3://%s/%s): %s. Remove it by hand, or let a lifecycle rule do it.",
                what,
                kwargs.get("Bucket"),
                kwargs.get("Key"),
                exc,
            )
            return False
        return True


class SeedanceToS3Operator(SeedanceTransferBaseOperator):
    """
    Copy the videos of a Seedance request (or any http(s) files) into S3, streamed and verified.

    Memory stays at a few parts (``(1 + upload_concurrency) * part_size``, 24 MiB by default) whatever the
    video size. Downloads never carry the API token and resume with HTTP ranges after a dropped connection.
    Each object gets ``ContentType`` from the download (else ``video/mp4``) and metadata ``sha256`` and
    ``source-url`` (plus ``seedance-request-id``); a failed copy leaves no object and no unfinished upload.

    .. code-block:: python

        SeedanceToS3Operator(
            task_id="store",
            request_id="{{ ti.xcom_pull('generate')['request_id'] }}",
            dest_key="s3://my-bucket/videos/{{ ds }}/{{ run_id }}-{index}.mp4",
            outlets=[Asset("s3://my-bucket/videos/")],
        )

    :param dest_key: the object key, or an ``s3://bucket/key`` URL (templated). With several videos it must
        contain ``{index}`` (0-based), else the task fails before copying anything.
    :param dest_bucket: the bucket (templated); optional when ``dest_key`` is an ``s3://`` URL, and when both
        name a bucket they must be the same.
    :param request_id: copy every video of this Seedance request (templated). Exactly one of ``request_id``
        and ``source_urls``.
    :param source_urls: copy these http(s) URLs: one URL or a list (templated).
    :param seedance_conn_id: the ``seedance`` connection used to read the result of ``request_id``.
    :param aws_conn_id: the AWS connection (Amazon provider), honouring ``endpoint_url`` in its extra for
        MinIO, Ceph or moto. ``None`` (or no Amazon provider installed) uses boto3's default credential chain.
    :param replace: overwrite existing objects. When ``False``, an existing object holding a verified copy of
        the same source (``source-url`` metadata and size) is skipped, so a task retry is idempotent; any other
        existing object fails the task before anything is copied.
    :param region_name: the AWS region, overriding the connection's.
    :param endpoint_url: an S3 endpoint overriding the connection's (MinIO, Ceph, moto, a VPC endpoint).
    :param verify: TLS verification for S3: ``False``, or a CA bundle path (default: verify).
    :param extra_args: extra S3 arguments for the final object, among :data:`ALLOWED_EXTRA_ARGS` (encryption,
        storage class, ACL, tags, cache control, ``ContentType`` override, extra ``Metadata``...).
    :param staging_prefix: where multipart uploads are staged before publication (default: a
        ``.seedance-staging/`` folder next to each final key).
    :param part_size: bytes per multipart part (>= 5 MiB; default 8 MiB). Files up to this size go in one
        PutObject.
    :param upload_concurrency: parts uploaded in the background while the download continues.
    :param download_timeout: seconds allowed to connect to the source and between two reads.
    :param download_max_retries: retries of a download after a transient failure (renewed on progress).
    :param download_retry_backoff: first retry delay in seconds, doubled per attempt.
    :return: the ``s3://bucket/key`` URI of every video, in source order. XCom ``objects`` holds the details
        (size, sha256, content type, skipped).
    """

    template_fields: Sequence[str] = ("request_id", "source_urls", "dest_bucket", "dest_key")
    ui_color = "#c4b5fd"

    def __init__(
        self,
        *,
        dest_bucket: str | None = None,
        dest_key: str,
        request_id: str | None = None,
        source_urls: str | Sequence[str] | None = None,
        seedance_conn_id: str = "seedance_default",
        aws_conn_id: str | None = "aws_default",
        replace: bool = False,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        verify: bool | str | None = None,
        extra_args: Mapping[str, Any] | None = None,
        staging_prefix: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            request_id=request_id,
            source_urls=source_urls,
            seedance_conn_id=seedance_conn_id,
            replace=replace,
            **kwargs,
        )
        self.dest_bucket = dest_bucket
        self.dest_key = dest_key
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.verify = verify
        self.extra_args = self._check_extra_args(extra_args)
        self.staging_prefix = self._check_staging_prefix(staging_prefix)
        if (
            not isinstance(part_size, int)
            or isinstance(part_size, bool)
            or not (MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE)
        ):
            raise SeedanceConfigurationError(
                f"part_size: must be an integer from {MIN_PART_SIZE} (5 MiB, S3's minimum) to 5 GiB, got {part_size!r}."
            )
        if (
            not isinstance(upload_concurrency, int)
            or isinstance(upload_concurrency, bool)
            or upload_concurrency < 1
        ):
            raise SeedanceConfigurationError(
                f"upload_concurrency: must be a positive integer, got {upload_concurrency!r}."
            )
        self.part_size = part_size
        self.upload_concurrency = upload_concurrency
        self._bucket = ""
        self._key_template = ""
        self._client: Any = None

    @staticmethod
    def _check_extra_args(extra_args: Mapping[str, Any] | None) -> dict[str, Any]:
        if extra_args is None:
            return {}
        if not isinstance(extra_args, Mapping):
            raise SeedanceConfigurationError(f"extra_args: must be a dict, got {type(extra_args).__name__}.")
        unknown = sorted(set(extra_args) - ALLOWED_EXTRA_ARGS)
        if unknown:
            raise SeedanceConfigurationError(
                f"extra_args: {unknown} not supported; use any of {sorted(ALLOWED_EXTRA_ARGS)}."
            )
        metadata = extra_args.get("Metadata") or {}
        clash = sorted(RESERVED_METADATA & {str(k).lower() for k in metadata})
        if clash:
            raise SeedanceConfigurationError(
                f"extra_args: Metadata keys {clash} are set by the operator itself."
            )
        return dict(extra_args)

    @staticmethod
    def _check_staging_prefix(prefix: str | None) -> str | None:
        if prefix is None:
            return None
        if not isinstance(prefix, str) or not prefix.strip("/"):
            raise SeedanceConfigurationError(
                f"staging_prefix: must be a non-empty key prefix such as 'tmp/seedance/', got {prefix!r}."
            )
        return prefix.lstrip("/").rstrip("/") + "/"

    # -- destination ---------------------------------------------------------------------------------------

    def prepare_destination(self) -> None:
        """Resolve the bucket and key template from ``dest_bucket`` / ``dest_key`` (no network call)."""
        self._bucket, self._key_template = parse_s3_destination(self.dest_bucket, self.dest_key)

    def destinations(self, sources: list[TransferSource]) -> list[str]:
        """
        Return ``s3://bucket/key`` for every source, ``{index}`` replaced.

        :param sources: the files to copy.
        """
        keys = expand_index(self._key_template, len(sources), what="dest_key")
        return [f"s3://{self._bucket}/{key}" for key in keys]

    @property
    def s3_client(self) -> Any:
        """The boto3 S3 client: from the Amazon provider's ``S3Hook`` when installed, else plain boto3."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        S3Hook = _s3_hook_class()
        if S3Hook is not None:
            hook = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)
            if self.endpoint_url is None:
                return hook.get_conn()
            return hook.get_session(region_name=self.region_name).client(
                "s3", endpoint_url=self.endpoint_url, config=hook.config, verify=self.verify
            )
        import boto3

        self.log.info("The Amazon provider is not installed: using boto3's default credential chain.")
        return boto3.session.Session().client(
            "s3", region_name=self.region_name, endpoint_url=self.endpoint_url, verify=self.verify
        )

    def existing_copy(self, uri: str) -> ExistingCopy | None:
        """
        Read the existing object's size and metadata, or return ``None`` when the key is free.

        :param uri: the destination.
        """
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            head = self.s3_client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _http_status(exc) == 404 or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if _http_status(exc) == 403:
                raise SeedanceTransferError(
                    f"Cannot tell whether {uri} exists (HTTP 403): allow s3:GetObject and s3:ListBucket on the "
                    "bucket, or set replace=True."
                ) from exc
            raise SeedanceTransferError(f"S3 HeadObject failed for {uri}: {exc}") from exc
        metadata = {str(k).lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ExistingCopy(
            uri=uri,
            size=int(head.get("ContentLength") or 0),
            sha256=metadata.get(SHA256_METADATA_KEY),
            source=metadata.get(SOURCE_URL_METADATA_KEY),
        )

    def new_writer(self, uri: str, source: TransferSource) -> TransferWriter:
        """
        Return the staged writer for one object.

        :param uri: the destination.
        :param source: the file being copied.
        """
        bucket, key = split_s3_uri(uri)
        metadata = {SOURCE_URL_METADATA_KEY: source.identity}
        if source.request_id:
            metadata[REQUEST_ID_METADATA_KEY] = source.request_id
        return S3StagedWriter(
            self.s3_client,
            bucket,
            key,
            staging_key=staging_key_for(key, self.staging_prefix),
            metadata=metadata,
            extra_args=self.extra_args,
            part_size=self.part_size,
            concurrency=self.upload_concurrency,
            logger=self.log,
        )

    def close_destination(self) -> None:
        """Forget the S3 client (a new try builds a fresh one)."""
        self._client = None


__all__ = [
    "ALLOWED_EXTRA_ARGS",
    "DEFAULT_UPLOAD_CONCURRENCY",
    "S3StagedWriter",
    "SeedanceToS3Operator",
    "parse_s3_destination",
    "staging_key_for",
]
