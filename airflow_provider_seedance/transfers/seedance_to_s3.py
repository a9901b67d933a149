"""Copy Seedance videos (or any http(s) file) into S3: streamed, verified, atomic, idempotent.

How a file lands in S3, and why nothing is ever left behind:

* A file that fits in one part (:data:`~._streaming.DEFAULT_PART_SIZE`, 8 MiB; most Seedance clips) is
  sent with one ``PutObject`` straight to the final key, carrying its metadata and a ``ChecksumSHA256``
  that S3 verifies on receipt. ``PutObject`` is atomic: the key holds the old object or the new one.
* A larger file needs somewhere to wait until its SHA-256 is known, because S3 fixes user metadata when
  a multipart upload is *created*. Two choices (``staging=``), both without downloading twice:

  - ``"s3"`` (default, no local disk): the parts stream as a multipart upload to a *staging* key
    (``<dir>/.seedance-staging/<name>.<uuid>.partial``), each with a CRC32 that S3 checks on receipt, so
    the staged bytes are exactly the hashed bytes. Once every byte is in and counted, the staging object
    is copied server side to the final key with ``MetadataDirective=REPLACE`` (``CopyObject`` up to 5 GiB,
    parallel ``UploadPartCopy`` above), which sets ``sha256``, ``source-url`` and ``ContentType`` and
    makes the final object appear at once, complete; ``CopyObject`` also has S3 compute the copy's full
    SHA-256, which must equal ours. The staging object is then deleted (its exact version, in a versioned
    bucket). The copy moves no byte through the worker, but S3 does copy the object once more.
  - ``"local"``: the bytes are spooled to an unnamed temporary file on the worker (still constant
    memory), then uploaded once, in parallel parts, as a multipart upload created with the final metadata.
    No staging object and no server-side copy; it needs free local disk for the whole video.
* On any failure (download, upload, verification, a kill signal) the writer waits for in-flight parts,
  aborts the multipart upload(s) and deletes the staging object. The final key is only ever written by an
  atomic call (PutObject, CopyObject, CompleteMultipartUpload), so it never holds a partial file, and an
  object that fails the final check (size, ``sha256`` metadata, S3's own SHA-256 where it has one) is
  deleted. (A worker killed with ``SIGKILL`` cannot clean up: an S3 lifecycle rule with
  ``AbortIncompleteMultipartUpload`` and an expiry on ``.seedance-staging/`` covers it.)

``boto3`` and the Amazon provider are imported only when the operator runs.
"""

from __future__ import annotations

import base64
import logging
import math
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
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

DEFAULT_UPLOAD_CONCURRENCY = 4
"""Parts uploaded in parallel while the next one downloads; memory is (1 + this) x part size (40 MiB)."""

PART_CHECKSUM_ALGORITHM = "CRC32"
"""Checksum botocore sends with every uploaded part; S3 rejects a part whose bytes do not match it."""

STAGING_MODES = frozenset({"s3", "local"})
"""Where a file larger than one part waits until its SHA-256 is known (see the module docstring)."""

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


def _uploaded_part(number: int, answer: Mapping[str, Any]) -> dict[str, Any]:
    """
    Return the CompleteMultipartUpload entry of an uploaded part, with the checksum S3 acknowledged.

    :param number: the part number.
    :param answer: UploadPart's response.
    """
    entry: dict[str, Any] = {"PartNumber": number, "ETag": answer["ETag"]}
    checksum_key = f"Checksum{PART_CHECKSUM_ALGORITHM}"
    if answer.get(checksum_key):
        entry[checksum_key] = answer[checksum_key]
    return entry


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


class _S3Writer:
    """
    What both S3 writers share: final arguments, the single-PutObject path, verification, cleanup helpers.

    :param client: a boto3 S3 client.
    :param bucket: the destination bucket.
    :param key: the final key.
    :param metadata: user metadata of the final object (``sha256`` is added at commit).
    :param extra_args: validated ``extra_args`` for the final object.
    :param part_size: bytes per part (>= 5 MiB); a file up to this size goes in one PutObject.
    :param concurrency: parts uploaded (or copied) in parallel.
    :param logger: where to log.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str],
        extra_args: Mapping[str, Any] | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        logger: Any = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.metadata = dict(metadata)
        self.extra_args = dict(extra_args or {})
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.log = logger or logging.getLogger(__name__)
        self.uri = f"s3://{bucket}/{key}"
        self.content_type = str(self.extra_args.pop("ContentType", "") or "")
        self.content_encoding: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._final_upload_id: str | None = None
        self._final_written = False

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

    # -- shared steps ------------------------------------------------------------------------------------

    def _final_args(self, result: DownloadResult) -> dict[str, Any]:
        args: dict[str, Any] = {
            **self.extra_args,
            "ContentType": self.content_type or result.content_type,
            "Metadata": {
                **dict(self.extra_args.get("Metadata") or {}),
                **self.metadata,
                SHA256_METADATA_KEY: result.sha256,
            },
        }
        if self.content_encoding:
            args["ContentEncoding"] = self.content_encoding
        return args

    def _put_whole(self, body: bytes, result: DownloadResult) -> None:
        """Publish a file that fits in one part with one atomic PutObject that S3 checks against our SHA-256."""
        with _s3_errors("PutObject", self.uri):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(result.sha256),
                **self._final_args(result),
            )
        self._final_written = True

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="seedance-s3"
            )
        return self._executor

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _assemble(
        self,
        final_args: dict[str, Any],
        parts: list[Callable[[int], dict[str, Any]]],
        *,
        checksum_algorithm: str | None = None,
    ) -> None:
        """
        Build the final object as a multipart upload whose part ``n`` is produced by ``parts[n - 1](n)``.

        The upload is created with the final metadata (the SHA-256 is known by now) and only becomes visible,
        whole, at CompleteMultipartUpload; any failure aborts it.

        :param final_args: the final object's arguments (metadata, content type, extra_args).
        :param parts: one callable per part, returning the part's entry for CompleteMultipartUpload.
        :param checksum_algorithm: the checksum the parts carry; declared at creation, as S3 expects, so
            S3 combines the parts' checksums instead of computing its default full-object CRC64NVME
            over the whole object again.
        """
        create_args = {k: v for k, v in final_args.items() if k != "TaggingDirective"}
        if checksum_algorithm:
            create_args["ChecksumAlgorithm"] = checksum_algorithm
        with _s3_errors("CreateMultipartUpload", self.uri):
            self._final_upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **create_args
            )["UploadId"]
        futures = [self._pool().submit(make, number) for number, make in enumerate(parts, start=1)]
        done = [future.result() for future in futures]
        with _s3_errors("CompleteMultipartUpload", self.uri):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._final_upload_id,
                MultipartUpload={"Parts": done},
            )
        self._final_upload_id = None
        self._final_written = True

    def _abort_final_upload(self) -> None:
        if self._final_upload_id is not None:
            self._quietly(
                "abort the multipart upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._final_upload_id,
            )
            self._final_upload_id = None

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

    def _remove_unverified_final(self) -> None:
        if self._final_written:
            # Only reached when the final object failed verification: it must not stay.
            self._quietly(
                "delete the unverified object", self.client.delete_object, Bucket=self.bucket, Key=self.key
            )
            self._final_written = False

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


class S3StagedWriter(_S3Writer):
    """
    Write one file to S3 with S3 staging (the default): one PutObject, or a staged multipart upload + copy.

    Memory is bounded by ``(1 + concurrency) * part_size`` whatever the file size; no local disk is used.

    :param staging_key: where a multipart upload is staged before the server-side copy.
    :param kwargs: see :class:`_S3Writer`.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, staging_key: str, **kwargs: Any) -> None:
        super().__init__(client, bucket, key, **kwargs)
        self.staging_key = staging_key
        self.staging_uri = f"s3://{bucket}/{staging_key}"
        # Part buffers are allocated once and recycled: (1 + concurrency) of them at most, so memory stays
        # flat (no allocator churn of 8 MiB blocks across threads either).
        self._free: list[bytearray] = []
        self._buffer: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_part = 1
        self._inflight: deque[Future[None]] = deque()
        self._staged_version: str | None = None
        self._staged = False

    # -- DownloadSink ------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Buffer ``data``; every full part is handed to a background upload.

        :param data: the next bytes of the file.
        """
        view = memoryview(data)
        while view:
            if self._buffer is None:
                self._buffer = self._free.pop() if self._free else bytearray(self.part_size)
                self._fill = 0
            count = min(len(view), self.part_size - self._fill)
            self._buffer[self._fill : self._fill + count] = view[:count]
            self._fill += count
            view = view[count:]
            if self._fill == self.part_size:
                self._submit(self._buffer, self._fill)
                self._buffer = None

    def rewind(self) -> None:
        """Start the file again: later parts overwrite the earlier ones, which complete will ignore."""
        self._drain(raise_errors=False)
        self._release_buffer()
        self._parts.clear()
        self._next_part = 1

    # -- TransferWriter ------------------------------------------------------------------------------------

    def commit(self, result: DownloadResult) -> None:
        """
        Publish the verified file at the final key with its ``sha256`` and ``source-url`` metadata.

        :param result: the finished download.
        """
        if self._upload_id is None:
            self._put_whole(self._pending_bytes(), result)
        else:
            self._complete_staging(result)
            self._publish_staging(result)
        self._verify_final(result)
        self._release_buffer()
        self._shutdown()

    def abort(self) -> None:
        """Remove every trace of this write: in-flight parts, multipart uploads, staging and unverified objects."""
        self._drain(raise_errors=False)
        self._shutdown()
        if self._upload_id is not None:
            self._quietly(
                "abort the staging multipart upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self.staging_key,
                UploadId=self._upload_id,
            )
            self._upload_id = None
        self._abort_final_upload()
        if self._staged:
            self._delete_staging()
        self._remove_unverified_final()
        self._release_buffer()
        self._free.clear()

    # -- internals ---------------------------------------------------------------------------------------

    def _pending_bytes(self) -> bytes:
        """Return the bytes buffered but not yet sent (the whole file, when it fits in one part)."""
        if self._buffer is None:
            return b""
        return bytes(memoryview(self._buffer)[: self._fill])

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            self._free.append(self._buffer)
        self._buffer = None
        self._fill = 0

    def _submit(self, part: bytearray, length: int) -> None:
        if self._upload_id is None:
            with _s3_errors("CreateMultipartUpload", self.staging_uri):
                answer = self.client.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.staging_key,
                    ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
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
        number = self._next_part
        self._next_part += 1
        self._inflight.append(self._pool().submit(self._upload_part, number, part, length))

    def _upload_part(self, number: int, buffer: bytearray, length: int) -> None:
        # A full buffer goes as is; only the last, shorter part is copied out of its buffer.
        body = buffer if length == len(buffer) else bytes(memoryview(buffer)[:length])
        try:
            with _s3_errors(f"UploadPart {number}", self.staging_uri):
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.staging_key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=body,
                    # botocore sends the part's CRC32 and S3 rejects the part if the bytes differ.
                    ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
                )
        finally:
            self._free.append(buffer)
        self._parts[number] = _uploaded_part(number, answer)

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
        if self._buffer is not None and self._fill:
            self._submit(self._buffer, self._fill)
            self._buffer = None
        self._drain()
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

    def _publish_staging(self, result: DownloadResult) -> None:
        final_args = self._final_args(result)
        source: dict[str, str] = {"Bucket": self.bucket, "Key": self.staging_key}
        if self._staged_version:
            source["VersionId"] = self._staged_version
        if result.size <= S3_COPY_OBJECT_MAX_BYTES:
            if "Tagging" in final_args:
                final_args["TaggingDirective"] = "REPLACE"
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
            self._final_written = True
        else:
            part_size = max(S3_COPY_PART_SIZE, math.ceil(result.size / S3_MAX_PARTS))
            ranges = [
                (start, min(start + part_size, result.size) - 1) for start in range(0, result.size, part_size)
            ]
            self._assemble(final_args, [self._part_copier(source, first, last) for first, last in ranges])
        # The final object exists from here on: until verification passes, abort() deletes it.
        self._delete_staging()

    def _part_copier(self, source: dict[str, str], first: int, last: int) -> Callable[[int], dict[str, Any]]:
        def copy(number: int) -> dict[str, Any]:
            with _s3_errors(f"UploadPartCopy {number}", self.uri):
                answer = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._final_upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

        return copy

    def _delete_staging(self) -> None:
        args: dict[str, str] = {"Bucket": self.bucket, "Key": self.staging_key}
        if self._staged_version:
            # Deleting the exact version leaves nothing in a versioned bucket (not even a delete marker).
            args["VersionId"] = self._staged_version
        if self._quietly("delete the staging object", self.client.delete_object, **args):
            self._staged = False


class S3SpooledWriter(_S3Writer):
    """
    Write one file to S3 with local staging: spool it to an unnamed temporary file, then upload it once.

    The SHA-256 is known before the upload starts, so the final multipart upload carries the metadata from
    its creation: no staging object, no server-side copy. The parts are read back from the file in
    parallel (``concurrency`` x ``part_size`` of memory). It needs free disk space for the whole video in
    ``spool_dir`` (which must not be a RAM-backed tmpfs, or the video would sit in memory after all).

    :param spool_dir: the directory of the temporary file (``None``: the system's temporary directory).
    :param kwargs: see :class:`_S3Writer`.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, spool_dir: str | None, **kwargs: Any) -> None:
        super().__init__(client, bucket, key, **kwargs)
        self.spool_dir = spool_dir
        self._file: Any = None
        self._lock = threading.Lock()

    def begin(self, source: SourceInfo) -> None:
        """
        Open the spool file (already unlinked where the OS allows: a killed worker leaves nothing).

        :param source: what the source announced.
        """
        super().begin(source)
        self._file = tempfile.TemporaryFile(dir=self.spool_dir, prefix="seedance-spool-")  # noqa: SIM115 - closed by commit/abort

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the spool file.

        :param data: the next bytes of the file.
        """
        self._file.write(data)

    def rewind(self) -> None:
        """Empty the spool file: the download starts again from byte 0."""
        self._file.seek(0)
        self._file.truncate()

    def commit(self, result: DownloadResult) -> None:
        """
        Upload the spooled file to the final key (metadata set at creation), then verify it.

        :param result: the finished download.
        """
        self._file.flush()
        size = result.size
        if size <= self.part_size:
            self._put_whole(self._read(0, size), result)
        else:
            self.log.info(
                "Uploading %s from the local spool file (%d MiB parts).", self.uri, self.part_size // MiB
            )
            offsets = range(0, size, self.part_size)
            self._assemble(
                self._final_args(result),
                [self._part_uploader(offset, min(self.part_size, size - offset)) for offset in offsets],
                checksum_algorithm=PART_CHECKSUM_ALGORITHM,
            )
        self._verify_final(result)
        self._shutdown()
        self._close()

    def abort(self) -> None:
        """Abort the multipart upload, remove an unverified object and drop the spool file."""
        self._shutdown()
        self._abort_final_upload()
        self._remove_unverified_final()
        self._close()

    def _read(self, offset: int, length: int) -> bytes:
        # Parts are read by several threads: one shared file position, so reads are serialised.
        with self._lock:
            self._file.seek(offset)
            return bytes(self._file.read(length))

    def _part_uploader(self, offset: int, length: int) -> Callable[[int], dict[str, Any]]:
        def upload(number: int) -> dict[str, Any]:
            body = self._read(offset, length)
            with _s3_errors(f"UploadPart {number}", self.uri):
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._final_upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
                )
            return _uploaded_part(number, answer)

        return upload

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


class SeedanceToS3Operator(SeedanceTransferBaseOperator):
    """
    Copy the videos of a Seedance request (or any http(s) files) into S3, streamed and verified.

    Memory stays at a few parts (``(1 + upload_concurrency) * part_size``, 40 MiB by default) whatever the
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
    :param staging: where a file larger than one part waits until its SHA-256 is known. ``"s3"`` (default):
        a staging object in the bucket, copied server side to the final key (no local disk; memory only).
        ``"local"``: an unnamed temporary file on the worker, uploaded once with the final metadata (no
        server-side copy, fewer S3 calls; needs free disk space for the video, never on a tmpfs).
    :param staging_prefix: with ``staging="s3"``, where staging objects go (default: a ``.seedance-staging/``
        folder next to each final key).
    :param spool_dir: with ``staging="local"``, the directory of the temporary file (default: the system's).
    :param part_size: bytes per multipart part (>= 5 MiB; default 8 MiB). Files up to this size go in one
        PutObject.
    :param upload_concurrency: parts uploaded in the background while the download continues.
    :param download_timeout: seconds allowed to connect to the source and between two reads.
    :param download_max_retries: retries of a download after a transient failure (renewed on progress).
    :param download_retry_backoff: first retry delay in seconds, doubled per attempt.
    :param download_max_resumes: interruptions one download survives in total (each waits a growing backoff).
    :param allow_private_networks: ``False`` refuses sources on private networks (loopback stays allowed;
        link-local / cloud-metadata addresses are always refused). See docs/transfer.md.
    :param asset_extra: more metadata for the outlet Asset events (templated), e.g.
        ``{"model_id": "{{ ti.xcom_pull('generate')['model_id'] }}", "duration": 5}``. Each event's extra
        already holds ``request_id`` (with a ``request_id`` source), ``uris``, ``sha256``, ``sizes`` and
        ``objects`` (per file: ``uri``, ``sha256``, ``size``, ``source_url``, ``index``); an
        :class:`~airflow.sdk.AssetAlias` outlet gets one event per file with those keys flat.
    :return: the ``s3://bucket/key`` URI of every video, in source order. XCom ``objects`` holds the details
        (size, sha256, content type, skipped).
    """

    template_fields: Sequence[str] = ("request_id", "source_urls", "dest_bucket", "dest_key", "asset_extra")
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
        staging: str = "s3",
        staging_prefix: str | None = None,
        spool_dir: str | None = None,
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
        if staging not in STAGING_MODES:
            raise SeedanceConfigurationError(
                f"staging: must be one of {sorted(STAGING_MODES)} ('s3': stage large files in the bucket and "
                f"copy them server side; 'local': spool them to a local file first), got {staging!r}."
            )
        if spool_dir is not None and staging != "local":
            raise SeedanceConfigurationError("spool_dir is only used with staging='local'.")
        self.staging = staging
        self.spool_dir = spool_dir
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
        options: dict[str, Any] = {
            "metadata": metadata,
            "extra_args": self.extra_args,
            "part_size": self.part_size,
            "concurrency": self.upload_concurrency,
            "logger": self.log,
        }
        if self.staging == "local":
            return S3SpooledWriter(self.s3_client, bucket, key, spool_dir=self.spool_dir, **options)
        return S3StagedWriter(
            self.s3_client, bucket, key, staging_key=staging_key_for(key, self.staging_prefix), **options
        )

    def close_destination(self) -> None:
        """Forget the S3 client (a new try builds a fresh one)."""
        self._client = None


__all__ = [
    "ALLOWED_EXTRA_ARGS",
    "DEFAULT_UPLOAD_CONCURRENCY",
    "S3SpooledWriter",
    "S3StagedWriter",
    "SeedanceToS3Operator",
    "parse_s3_destination",
    "staging_key_for",
]
