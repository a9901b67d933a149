"""The S3 writers of :class:`~.seedance_to_s3.SeedanceToS3Operator`: how one file lands in S3, atomically.

* A file that fits in one part (:data:`~._streaming.DEFAULT_PART_SIZE`, 8 MiB; most Seedance clips) is
  sent with one ``PutObject`` straight to the final key, carrying its metadata (``sha256`` included) and
  a ``ChecksumSHA256`` that S3 verifies on receipt. ``PutObject`` is atomic: the key holds the old object
  or the new one.
* A larger file, by default (:class:`S3DirectWriter`), is one multipart upload straight to the final key,
  created with the metadata known up front (``source-url``, ``seedance-request-id``, ``ContentType``) and
  the parts' checksum algorithm (CRC32, as boto3's transfer manager does): S3 verifies every part on
  receipt and combines their checksums at completion. The object appears, whole, at
  ``CompleteMultipartUpload``. Its SHA-256 is computed while streaming and reported (XCom, Asset event,
  OpenLineage, log) but not stored as metadata: S3 fixes user metadata when an upload is *created*,
  before the hash is known.
* Asked to store ``sha256`` metadata on such a file too (``sha256_metadata=True``), the file waits
  somewhere until its SHA-256 is known, without downloading twice:

  - :class:`S3StagedWriter` (``staging="s3"``, no local disk): the parts stream as a multipart upload to
    a *staging* key (``<dir>/.seedance-staging/<name>.<uuid>.partial``), each with a CRC32 S3 checks.
    Then the staging object is copied server side to the final key with ``MetadataDirective=REPLACE``
    (``CopyObject`` up to 5 GiB, parallel ``UploadPartCopy`` above), which sets the metadata and has S3
    compute the copy's full SHA-256 (compared with ours); the staging object is then deleted (its exact
    version, in a versioned bucket). S3 copies the object once more.
  - :class:`S3SpooledWriter` (``staging="local"``): the bytes are spooled to an unnamed temporary file
    on the worker, then uploaded once, in parallel parts, as a multipart upload created with the final
    metadata. No second copy in S3, but it needs free local disk for the whole video.

* Every multipart writer also takes parts out of order (:meth:`write_part`), which is how the parallel
  ranged download (:mod:`._ranged`) feeds it.
* On any failure (download, upload, verification, a kill signal) the writer waits for in-flight parts,
  aborts the multipart upload(s) and deletes the staging object. The final key is only ever written by an
  atomic call (PutObject, CopyObject, CompleteMultipartUpload), so it never holds a partial file, and an
  object that fails the final check (size, ``sha256`` metadata where written, S3's own SHA-256 where it
  has one) is deleted. (A worker killed with ``SIGKILL`` cannot clean up: an S3 lifecycle rule with
  ``AbortIncompleteMultipartUpload`` and an expiry on ``.seedance-staging/`` covers it.)

``boto3`` is never imported here at module level: the operator module stays cheap to import.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from airflow_provider_seedance.exceptions import SeedanceIntegrityError, SeedanceTransferError
from airflow_provider_seedance.transfers._base import SHA256_METADATA_KEY
from airflow_provider_seedance.transfers._streaming import (
    DEFAULT_PART_SIZE,
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

STAGING_DIR = ".seedance-staging"
"""Folder, next to the final key, holding multipart uploads until they are verified and published."""

STAGING_SUFFIX = ".partial"
"""Suffix of staging keys, so suffix-filtered S3 event notifications (``.mp4``) ignore them."""

STAGING_EXTRA_ARGS = frozenset(
    {"BucketKeyEnabled", "SSEKMSEncryptionContext", "SSEKMSKeyId", "ServerSideEncryption"}
)
"""The ``extra_args`` also applied to staging objects: encrypted like the final object, but never locked,
tagged or put in an archive storage class (which would bill a minimum duration for a temporary object)."""


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


def part_count(size: int, part_size: int) -> int:
    """
    Return how many parts of ``part_size`` bytes hold ``size`` bytes (at least one).

    :param size: the file size.
    :param part_size: bytes per part.
    """
    return max(1, math.ceil(size / part_size))


def b64_digest(hex_digest: str) -> str:
    """
    Return the base64 form S3 uses for a checksum given in hex.

    :param hex_digest: the checksum in hex.
    """
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def s3_error_code(exc: BaseException) -> str:
    """
    Return the S3 error code of a botocore ``ClientError`` (``""`` for anything else).

    :param exc: the exception.
    """
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def s3_http_status(exc: BaseException) -> int | None:
    """
    Return the HTTP status of a botocore ``ClientError``, if any.

    :param exc: the exception.
    """
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


@contextmanager
def s3_errors(action: str, uri: str) -> Iterator[None]:
    """
    Turn boto errors into a SeedanceTransferError that says which call failed where.

    :param action: the S3 call.
    :param uri: the object it was about.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise SeedanceTransferError(f"S3 {action} failed for {uri}: {exc}") from exc


class _S3Writer:
    """
    What every S3 writer shares: object arguments, the single-PutObject path, verification, cleanup helpers.

    :param client: a boto3 S3 client.
    :param bucket: the destination bucket.
    :param key: the final key.
    :param metadata: user metadata of the final object (``sha256`` is added where it is written).
    :param extra_args: validated ``extra_args`` for the final object.
    :param part_size: bytes per part (>= 5 MiB); a file up to this size goes in one PutObject.
    :param concurrency: parts uploaded (or copied) in parallel.
    :param logger: where to log.
    """

    writes_sha256_metadata = True
    """Whether the object of a file larger than one part carries ``sha256`` metadata."""

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
        self._sha256_written = False

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

    def _object_args(self, sha256: str | None, content_type: str = "") -> dict[str, Any]:
        """
        Return the final object's arguments: extra_args, content type, metadata (with ``sha256`` if given).

        :param sha256: the SHA-256 to store as metadata, or ``None`` when it is not known yet.
        :param content_type: the fallback content type (the download's).
        """
        metadata = {**dict(self.extra_args.get("Metadata") or {}), **self.metadata}
        if sha256 is not None:
            metadata[SHA256_METADATA_KEY] = sha256
        args: dict[str, Any] = {
            **self.extra_args,
            "ContentType": self.content_type or content_type,
            "Metadata": metadata,
        }
        if self.content_encoding:
            args["ContentEncoding"] = self.content_encoding
        return args

    def _final_args(self, result: DownloadResult) -> dict[str, Any]:
        return self._object_args(result.sha256, result.content_type)

    def _put_whole(self, body: bytes, result: DownloadResult) -> None:
        """Publish a file that fits in one part with one atomic PutObject S3 checks against our SHA-256."""
        with s3_errors("PutObject", self.uri):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=b64_digest(result.sha256),
                **self._final_args(result),
            )
        self._final_written = True
        self._sha256_written = True

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
        with s3_errors("CreateMultipartUpload", self.uri):
            self._final_upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **create_args
            )["UploadId"]
        futures = [self._pool().submit(make, number) for number, make in enumerate(parts, start=1)]
        done = [future.result() for future in futures]
        with s3_errors("CompleteMultipartUpload", self.uri):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._final_upload_id,
                MultipartUpload={"Parts": done},
            )
        self._final_upload_id = None
        self._final_written = True
        self._sha256_written = SHA256_METADATA_KEY in final_args.get("Metadata", {})

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
        with s3_errors("HeadObject", self.uri):
            head = self.client.head_object(Bucket=self.bucket, Key=self.key, ChecksumMode="ENABLED")
        problems = []
        if head.get("ContentLength") != result.size:
            problems.append(f"size {head.get('ContentLength')} instead of {result.size}")
        stored = (head.get("Metadata") or {}).get(SHA256_METADATA_KEY)
        if (self._sha256_written or stored is not None) and stored != result.sha256:
            problems.append("sha256 metadata missing or different")
        checksum = head.get("ChecksumSHA256")
        # A composite checksum ("...-N") of a multipart object is not the file's SHA-256: skip it.
        if checksum and "-" not in checksum and checksum != b64_digest(result.sha256):
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


class _S3MultipartStream(_S3Writer, ABC):
    """
    Stream a file's parts into one multipart upload at :meth:`_upload_key`, in order or out of order.

    In order (:meth:`write`), the bytes fill recycled part buffers, and every full part is uploaded in the
    background while the next one fills: memory stays at ``(1 + concurrency) * part_size``. A full buffer
    is only sent once more bytes arrive, so a file of exactly one part still goes in one PutObject. Out of
    order (:meth:`write_part`), the caller owns the buffers and the threads. Every part carries a CRC32
    that S3 checks, declared when the upload is created. The upload is created at the first part.

    :param kwargs: see :class:`_S3Writer`.
    """

    def __init__(self, client: Any, bucket: str, key: str, **kwargs: Any) -> None:
        super().__init__(client, bucket, key, **kwargs)
        # Part buffers are allocated once and recycled: (1 + concurrency) of them at most, so memory stays
        # flat (no allocator churn of 8 MiB blocks across threads either).
        self._free: list[bytearray] = []
        self._buffer: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_part = 1
        self._inflight: deque[Future[None]] = deque()
        self._create_lock = threading.Lock()

    # -- what subclasses provide ---------------------------------------------------------------------------

    @abstractmethod
    def _upload_key(self) -> str:
        """Return the key the parts are uploaded to."""

    @abstractmethod
    def _create_args(self) -> dict[str, Any]:
        """Return the arguments of CreateMultipartUpload besides bucket, key and checksum algorithm."""

    # -- DownloadSink ------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Buffer ``data``; a full part is handed to a background upload when more bytes follow it.

        :param data: the next bytes of the file.
        """
        view = memoryview(data)
        while view:
            if self._buffer is not None and self._fill == self.part_size:
                self._submit(self._buffer, self._fill)
                self._buffer = None
            if self._buffer is None:
                self._buffer = self._free.pop() if self._free else bytearray(self.part_size)
                self._fill = 0
            count = min(len(view), self.part_size - self._fill)
            self._buffer[self._fill : self._fill + count] = view[:count]
            self._fill += count
            view = view[count:]

    def rewind(self) -> None:
        """Start the file again: later parts overwrite the earlier ones, which complete will ignore."""
        self._drain(raise_errors=False)
        self._release_buffer()
        self._parts.clear()
        self._next_part = 1

    def write_part(self, number: int, data: bytearray | bytes) -> None:
        """
        Upload part ``number`` (bytes ``(number - 1) * part_size`` onwards) now, from the calling thread.

        :param number: the part number, from 1.
        :param data: the part's bytes (``part_size`` of them, fewer for the last part).
        """
        self._send_part(number, data)

    # -- internals ---------------------------------------------------------------------------------------

    def _ensure_upload(self) -> str:
        """Create the multipart upload on first use (once, whichever thread comes first); return its id."""
        with self._create_lock:
            if self._upload_id is None:
                key = self._upload_key()
                with s3_errors("CreateMultipartUpload", f"s3://{self.bucket}/{key}"):
                    answer = self.client.create_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
                        **self._create_args(),
                    )
                self._upload_id = answer["UploadId"]
                self._on_created()
            return self._upload_id

    def _on_created(self) -> None:
        """Log where the parts go (called once, when the upload is created)."""

    def _send_part(self, number: int, body: bytearray | bytes) -> None:
        upload_id = self._ensure_upload()
        if number > S3_MAX_PARTS:
            raise SeedanceTransferError(
                f"{self.uri}: the file needs more than {S3_MAX_PARTS} parts of {self.part_size} bytes; raise "
                "part_size (the source did not announce its size, so it could not be chosen upfront)."
            )
        key = self._upload_key()
        with s3_errors(f"UploadPart {number}", f"s3://{self.bucket}/{key}"):
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                # botocore sends the part's CRC32 and S3 rejects the part if the bytes differ.
                ChecksumAlgorithm=PART_CHECKSUM_ALGORITHM,
            )
        self._parts[number] = _uploaded_part(number, answer)

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
        self._ensure_upload()
        # Bound the parts held in memory: wait for the oldest upload before queueing another.
        while len(self._inflight) >= self.concurrency:
            self._inflight.popleft().result()
        number = self._next_part
        self._next_part += 1
        self._inflight.append(self._pool().submit(self._upload_buffer, number, part, length))

    def _upload_buffer(self, number: int, buffer: bytearray, length: int) -> None:
        # A full buffer goes as is; only the last, shorter part is copied out of its buffer.
        body = buffer if length == len(buffer) else bytes(memoryview(buffer)[:length])
        try:
            self._send_part(number, body)
        finally:
            self._free.append(buffer)

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

    def _complete_upload(self, result: DownloadResult) -> dict[str, Any]:
        """Send the last buffered part, wait for every part, complete the upload; return S3's answer."""
        if self._buffer is not None and self._fill:
            self._submit(self._buffer, self._fill)
            self._buffer = None
        self._drain()
        count = part_count(result.size, self.part_size)
        missing = [n for n in range(1, count + 1) if n not in self._parts]
        if missing:
            raise SeedanceIntegrityError(
                f"{self.uri}: parts {missing[:5]} of {count} were never uploaded; not published."
            )
        key = self._upload_key()
        with s3_errors("CompleteMultipartUpload", f"s3://{self.bucket}/{key}"):
            answer = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": [self._parts[n] for n in range(1, count + 1)]},
            )
        self._upload_id = None
        return dict(answer)

    def _abort_upload(self) -> None:
        """Wait for the parts in flight, then abort the multipart upload (if one was created)."""
        self._drain(raise_errors=False)
        self._shutdown()
        if self._upload_id is not None:
            self._quietly(
                "abort the multipart upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=self._upload_key(),
                UploadId=self._upload_id,
            )
            self._upload_id = None


class S3DirectWriter(_S3MultipartStream):
    """
    Write one file to S3 in one pass (the default): one PutObject, or one multipart upload to the final key.

    The multipart upload is created with the metadata known up front (``source-url``,
    ``seedance-request-id``, ``ContentType``, ``extra_args``) and the parts' CRC32; it becomes the object,
    whole, at CompleteMultipartUpload. No staging object, no server-side copy, no ``sha256`` metadata on a
    file larger than one part (its SHA-256 is reported by the operator instead). Memory is bounded by
    ``(1 + concurrency) * part_size`` whatever the file size; no local disk is used.

    :param kwargs: see :class:`_S3Writer`.
    """

    writes_sha256_metadata = False

    def _upload_key(self) -> str:
        return self.key

    def _create_args(self) -> dict[str, Any]:
        return self._object_args(None)

    def _on_created(self) -> None:
        self.log.info("Uploading %s as a multipart upload (%d MiB parts).", self.uri, self.part_size // MiB)

    def commit(self, result: DownloadResult) -> None:
        """
        Publish the verified file at the final key.

        :param result: the finished download.
        """
        if self._upload_id is None:
            self._put_whole(self._pending_bytes(), result)
        else:
            self._complete_upload(result)
            # The object exists from here on: until verification passes, abort() deletes it.
            self._final_written = True
        self._verify_final(result)
        self._release_buffer()
        self._shutdown()

    def abort(self) -> None:
        """Remove every trace of this write: in-flight parts, the multipart upload, an unverified object."""
        self._abort_upload()
        self._remove_unverified_final()
        self._release_buffer()
        self._free.clear()


class S3StagedWriter(_S3MultipartStream):
    """
    Write one file to S3 with ``sha256`` metadata and S3 staging: one PutObject, or staged upload + copy.

    Memory is bounded by ``(1 + concurrency) * part_size`` whatever the file size; no local disk is used.

    :param staging_key: where a multipart upload is staged before the server-side copy.
    :param kwargs: see :class:`_S3Writer`.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, staging_key: str, **kwargs: Any) -> None:
        super().__init__(client, bucket, key, **kwargs)
        self.staging_key = staging_key
        self.staging_uri = f"s3://{bucket}/{staging_key}"
        self._staged_version: str | None = None
        self._staged = False

    def _upload_key(self) -> str:
        return self.staging_key

    def _create_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.extra_args.items() if k in STAGING_EXTRA_ARGS}

    def _on_created(self) -> None:
        self.log.info(
            "Staging the upload at %s (multipart, %d MiB parts).", self.staging_uri, self.part_size // MiB
        )

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
        """Remove every trace of this write: in-flight parts, multipart uploads, staged or unverified data."""
        self._abort_upload()
        self._abort_final_upload()
        if self._staged:
            self._delete_staging()
        self._remove_unverified_final()
        self._release_buffer()
        self._free.clear()

    # -- internals ---------------------------------------------------------------------------------------

    def _complete_staging(self, result: DownloadResult) -> None:
        answer = self._complete_upload(result)
        self._staged = True
        version = answer.get("VersionId")
        self._staged_version = version if version and version != "null" else None
        with s3_errors("HeadObject", self.staging_uri):
            staged_size = self.client.head_object(Bucket=self.bucket, Key=self.staging_key)["ContentLength"]
        if staged_size != result.size:
            raise SeedanceIntegrityError(
                f"{self.staging_uri} holds {staged_size} bytes but {result.size} were downloaded; not "
                "published."
            )

    def _publish_staging(self, result: DownloadResult) -> None:
        final_args = self._final_args(result)
        source: dict[str, str] = {"Bucket": self.bucket, "Key": self.staging_key}
        if self._staged_version:
            source["VersionId"] = self._staged_version
        if result.size <= S3_COPY_OBJECT_MAX_BYTES:
            if "Tagging" in final_args:
                final_args["TaggingDirective"] = "REPLACE"
            with s3_errors("CopyObject", self.uri):
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
            self._sha256_written = True
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
            with s3_errors(f"UploadPartCopy {number}", self.uri):
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
    Write one file to S3 with ``sha256`` metadata via local staging: spool to a temporary file, then upload.

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

    def begin(self, source: SourceInfo) -> None:
        """
        Open the spool file (already unlinked where the OS allows: a killed worker leaves nothing).

        :param source: what the source announced.
        """
        super().begin(source)
        if self._file is None:
            # Closed by commit or abort, not by a with block.
            self._file = tempfile.TemporaryFile(dir=self.spool_dir, prefix="seedance-spool-")  # noqa: SIM115

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the spool file.

        :param data: the next bytes of the file.
        """
        self._file.write(data)

    def write_part(self, number: int, data: bytearray | bytes) -> None:
        """
        Write part ``number`` at its offset in the spool file (any order, any thread).

        :param number: the part number, from 1.
        :param data: the part's bytes.
        """
        os.pwrite(self._file.fileno(), data, (number - 1) * self.part_size)

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
        # Parts are read by several threads: os.pread needs no shared file position.
        return os.pread(self._file.fileno(), length, offset)

    def _part_uploader(self, offset: int, length: int) -> Callable[[int], dict[str, Any]]:
        def upload(number: int) -> dict[str, Any]:
            body = self._read(offset, length)
            with s3_errors(f"UploadPart {number}", self.uri):
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


__all__ = [
    "DEFAULT_UPLOAD_CONCURRENCY",
    "PART_CHECKSUM_ALGORITHM",
    "S3_COPY_OBJECT_MAX_BYTES",
    "S3_COPY_PART_SIZE",
    "S3_MAX_PARTS",
    "S3_MAX_PART_SIZE",
    "STAGING_DIR",
    "STAGING_EXTRA_ARGS",
    "STAGING_SUFFIX",
    "S3DirectWriter",
    "S3SpooledWriter",
    "S3StagedWriter",
    "b64_digest",
    "part_count",
    "s3_error_code",
    "s3_errors",
    "s3_http_status",
    "staging_key_for",
]
