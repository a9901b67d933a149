"""Copy Seedance videos (or any http(s) file) into S3: streamed, verified, atomic, idempotent, in one pass.

The operator holds the operator; how a file lands in S3 (and why nothing is ever left behind) is the
writers' business, in :mod:`._s3_writers`:

* a file that fits in one part: one ``PutObject`` with ``ChecksumSHA256`` and ``sha256`` metadata;
* a larger file, by default: one multipart upload straight to the final key, created with the metadata
  known up front, each part with a CRC32 that S3 verifies; the SHA-256 is reported (XCom ``objects``, the
  Asset event, OpenLineage, the log), not stored as metadata;
* with ``sha256_metadata=True``: staged (``staging="s3"``: a staging object copied server side;
  ``staging="local"``: a local spool file) so that ``sha256`` metadata can be set on every object.

When the source honours ``Range``, a large file is fetched over several connections at once
(:mod:`._ranged`), each feeding its own parts.

``boto3`` and the Amazon provider are imported only when the operator runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceTransferError
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
from airflow_provider_seedance.transfers._ranged import DEFAULT_DOWNLOAD_CONNECTIONS, RangedDownload
from airflow_provider_seedance.transfers._s3_writers import (
    DEFAULT_UPLOAD_CONCURRENCY,
    S3_MAX_PART_SIZE,
    S3DirectWriter,
    S3SpooledWriter,
    S3StagedWriter,
    s3_error_code,
    s3_http_status,
    staging_key_for,
)
from airflow_provider_seedance.transfers._streaming import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    DownloadResult,
    StreamingDownload,
)

STAGING_MODES = frozenset({"s3", "local"})
"""Where a file larger than one part waits until its SHA-256 is known, with ``sha256_metadata=True``."""

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
"""
``extra_args`` accepted for the final object (the arguments PutObject, CopyObject and
CreateMultipartUpload share).
"""

MAX_DOWNLOAD_CONNECTIONS = 16
"""Most connections one file is fetched over (each holds a part in memory; a CDN sees them all)."""

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


def _s3_hook_class() -> Any:
    """Return the Amazon provider's ``S3Hook`` class, or ``None`` when the provider is not installed."""
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError:
        return None
    return S3Hook


class SeedanceToS3Operator(SeedanceTransferBaseOperator):
    """
    Copy the videos of a Seedance request (or any http(s) files) into S3, streamed and verified.

    Memory stays at a few parts whatever the video size: ``(1 + upload_concurrency) * part_size`` for one
    stream (40 MiB by default), ``(download_connections + upload_concurrency) * part_size`` for a parallel
    ranged download (56 MiB by default). Downloads never carry the API token and resume with HTTP ranges
    after a dropped connection. Each object gets ``ContentType`` from the download (else ``video/mp4``) and
    metadata ``source-url`` (plus ``seedance-request-id``), and ``sha256`` when the file fits in one part
    (or with ``sha256_metadata=True``); the SHA-256 of every file is in XCom ``objects``, the Asset events,
    OpenLineage and the log. A failed copy leaves no object and no unfinished upload.

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
    :param replace: overwrite existing objects. When ``False``, an existing object holding a copy of the same
        source (``source-url`` metadata and size, plus ``sha256`` where the object has it) is skipped, so a
        task retry is idempotent; any other existing object fails the task before anything is copied.
    :param region_name: the AWS region, overriding the connection's.
    :param endpoint_url: an S3 endpoint overriding the connection's (MinIO, Ceph, moto, a VPC endpoint).
    :param verify: TLS verification for S3: ``False``, or a CA bundle path (default: verify).
    :param extra_args: extra S3 arguments for the final object, among :data:`ALLOWED_EXTRA_ARGS` (encryption,
        storage class, ACL, tags, cache control, ``ContentType`` override, extra ``Metadata``...).
    :param sha256_metadata: also store ``sha256`` metadata on files larger than one part. It costs a second
        pass: the file waits (``staging``) until its SHA-256 is known. Default ``False``: such a file is one
        multipart upload straight to the final key, each part checked by S3 (CRC32), and its SHA-256 is
        reported rather than stored.
    :param staging: with ``sha256_metadata=True``, where a file larger than one part waits. ``"s3"``
        (default): a staging object in the bucket, copied server side to the final key (no local disk; S3
        copies the object once more). ``"local"``: an unnamed temporary file on the worker, uploaded once
        with the final metadata (needs free disk space for the video, never on a tmpfs; the upload starts
        after the download ends).
    :param staging_prefix: with ``staging="s3"``, where staging objects go (default: a ``.seedance-staging/``
        folder next to each final key).
    :param spool_dir: with ``staging="local"``, the directory of the temporary file (default: the system's).
    :param download_connections: connections fetching ranges of one file at once when the source honours
        ``Range`` and the file is larger than one part (1: always one stream). A CDN that limits each
        connection's rate then does not limit the copy.
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
        sha256_metadata: bool = False,
        staging: str | None = None,
        staging_prefix: str | None = None,
        spool_dir: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        download_connections: int = DEFAULT_DOWNLOAD_CONNECTIONS,
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
        if not isinstance(sha256_metadata, bool):
            raise SeedanceConfigurationError(
                f"sha256_metadata: must be True or False, got {sha256_metadata!r}."
            )
        if not sha256_metadata:
            given = [
                name
                for name, value in (
                    ("staging", staging),
                    ("staging_prefix", staging_prefix),
                    ("spool_dir", spool_dir),
                )
                if value is not None
            ]
            if given:
                raise SeedanceConfigurationError(
                    f"{given[0]}: only used with sha256_metadata=True (staging is what storing sha256 "
                    "metadata on a file larger than one part costs); without it such a file is one multipart "
                    "upload straight to the final key. Remove it, or set sha256_metadata=True."
                )
        staging = "s3" if staging is None else staging
        if staging not in STAGING_MODES:
            raise SeedanceConfigurationError(
                f"staging: must be one of {sorted(STAGING_MODES)} ('s3': stage large files in the bucket and "
                f"copy them server side; 'local': spool them to a local file first), got {staging!r}."
            )
        if spool_dir is not None and staging != "local":
            raise SeedanceConfigurationError("spool_dir is only used with staging='local'.")
        self.sha256_metadata = sha256_metadata
        self.staging = staging
        self.spool_dir = spool_dir
        self.staging_prefix = self._check_staging_prefix(staging_prefix)
        if (
            not isinstance(part_size, int)
            or isinstance(part_size, bool)
            or not (MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE)
        ):
            raise SeedanceConfigurationError(
                f"part_size: must be an integer from {MIN_PART_SIZE} (5 MiB, S3's minimum) to 5 GiB, got "
                f"{part_size!r}."
            )
        if (
            not isinstance(upload_concurrency, int)
            or isinstance(upload_concurrency, bool)
            or upload_concurrency < 1
        ):
            raise SeedanceConfigurationError(
                f"upload_concurrency: must be a positive integer, got {upload_concurrency!r}."
            )
        if (
            not isinstance(download_connections, int)
            or isinstance(download_connections, bool)
            or not 1 <= download_connections <= MAX_DOWNLOAD_CONNECTIONS
        ):
            raise SeedanceConfigurationError(
                "download_connections: must be an integer from 1 (one stream) to "
                f"{MAX_DOWNLOAD_CONNECTIONS}, got {download_connections!r}."
            )
        self.part_size = part_size
        self.upload_concurrency = upload_concurrency
        self.download_connections = download_connections
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
            if s3_http_status(exc) == 404 or s3_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            if s3_http_status(exc) == 403:
                raise SeedanceTransferError(
                    f"Cannot tell whether {uri} exists (HTTP 403): allow s3:GetObject and s3:ListBucket on "
                    "the bucket, or set replace=True."
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
        Return the writer for one object: in one pass, or staged for ``sha256`` metadata.

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
        if not self.sha256_metadata:
            return S3DirectWriter(self.s3_client, bucket, key, **options)
        if self.staging == "local":
            return S3SpooledWriter(self.s3_client, bucket, key, spool_dir=self.spool_dir, **options)
        return S3StagedWriter(
            self.s3_client, bucket, key, staging_key=staging_key_for(key, self.staging_prefix), **options
        )

    def stream_into(self, download: StreamingDownload, writer: TransferWriter) -> DownloadResult:
        """
        Copy the file into ``writer``: in parallel ranges when the source allows it, else as one stream.

        :param download: the download of one file.
        :param writer: one of this module's S3 writers.
        """
        ranged = RangedDownload(
            download, connections=self.download_connections, upload_concurrency=self.upload_concurrency
        )
        return ranged.copy_to(writer)  # type: ignore[arg-type]  # every S3 writer takes parts

    def close_destination(self) -> None:
        """Forget the S3 client (a new try builds a fresh one)."""
        self._client = None


__all__ = [
    "ALLOWED_EXTRA_ARGS",
    "DEFAULT_DOWNLOAD_CONNECTIONS",
    "DEFAULT_UPLOAD_CONCURRENCY",
    "SeedanceToS3Operator",
]
