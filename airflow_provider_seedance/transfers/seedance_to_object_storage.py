"""Copy Seedance videos into any Airflow object storage (local paths, GCS, Azure, S3 via fsspec...).

Same streaming core and rules as :class:`~.seedance_to_s3.SeedanceToS3Operator`, written through Airflow's
``ObjectStoragePath`` (fsspec), so every store Airflow can attach works:

* The bytes stream into a hidden staging file next to the destination (``.<name>.<uuid>.partial``),
  written chunk by chunk (the filesystem's writer buffers at most one block), hashed and counted on the way.
* Once verified, the staging file is published at the destination in one step, complete: on s3fs one
  server-side copy that carries the metadata and ``ContentType`` (``MetadataDirective=REPLACE``), so the
  object appears once, with its metadata, and fires one event; on a local disk an atomic ``rename``. Other
  stores with object metadata (``setxattrs``, e.g. gcsfs) get a move, then their metadata set (two steps).
  The destination never holds a partial file.
* The integrity metadata (``sha256``, ``source-url``, ``content-type``) goes into the object's metadata where
  the filesystem supports it; elsewhere (a local disk) into a JSON sidecar ``<name>.seedance.json``, which is
  also what makes ``replace=False`` reruns idempotent there. The sidecar is written after the file, to a
  hidden temporary name then renamed, so it is never seen half-written; a stale sidecar is removed before a
  replaced file is moved in. A sidecar that cannot be read (left by a crash of an older version) is ignored.
* Any failure closes and deletes the staging file (and a destination whose publication did not finish).

For S3 itself, prefer :class:`~.seedance_to_s3.SeedanceToS3Operator`: it sets metadata atomically and
needs no s3fs.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceIntegrityError,
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
from airflow_provider_seedance.transfers._streaming import DownloadResult, SourceInfo

SIDECAR_SUFFIX = ".seedance.json"
"""Suffix of the JSON file holding the integrity metadata on filesystems without object metadata."""

STAGING_SUFFIX = ".partial"
"""Suffix of staging files (hidden, next to the destination) until they are verified and moved in place."""

CONTENT_TYPE_METADATA_KEY = "content-type"

S3_SINGLE_COPY_MAX_BYTES = 5 * 1024**3
"""S3's CopyObject limit: a larger staging object cannot be copied with its metadata in one call."""

_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


def _has_object_metadata(fs: Any) -> bool:
    """Whether the filesystem can store per-object metadata (fsspec has no common API: s3fs, gcsfs do)."""
    return callable(getattr(fs, "setxattrs", None)) and callable(getattr(fs, "getxattr", None))


def _copy_with_metadata(
    fs: Any, size: int, metadata: dict[str, str], content_type: str
) -> dict[str, Any] | None:
    """
    Return the ``fs.copy`` options that set the metadata in the copy itself (``None``: the store has none).

    s3fs passes them to ``CopyObject`` (objects up to 5 GiB): the destination is created once, complete.
    """
    if type(fs).__module__.split(".", 1)[0] == "s3fs" and size <= S3_SINGLE_COPY_MAX_BYTES:
        return {"MetadataDirective": "REPLACE", "Metadata": dict(metadata), "ContentType": content_type}
    return None


def sidecar_path(path: Any) -> Any:
    """
    Return the JSON sidecar path of ``path`` (``<name>.seedance.json`` in the same folder).

    :param path: an ``ObjectStoragePath``.
    """
    return path.parent / f"{path.name}{SIDECAR_SUFFIX}"


class ObjectStorageWriter:
    """
    Write one file through an ``ObjectStoragePath``: staging file, verify, move in place, record metadata.

    :param path: the destination ``ObjectStoragePath``.
    :param metadata: ``source-url`` (and request id) to record; ``sha256`` is added at commit.
    :param sidecar: write a JSON sidecar: ``True``, ``False``, or ``None`` for "when the store has no
        object metadata".
    :param logger: where to log.
    """

    def __init__(
        self, path: Any, *, metadata: dict[str, str], sidecar: bool | None, logger: Any = None
    ) -> None:
        self.path = path
        self.fs = path.fs
        self.metadata = dict(metadata)
        self.sidecar = sidecar
        self.log = logger or logging.getLogger(__name__)
        self.staging = path.parent / f".{path.name}.{uuid.uuid4().hex}{STAGING_SUFFIX}"
        self.content_type = ""
        self._file: Any = None
        self._published = False

    # -- DownloadSink ------------------------------------------------------------------------------------

    def begin(self, source: SourceInfo) -> None:
        """
        Create the destination folder (local disks) and open the staging file.

        :param source: what the source announced.
        """
        self.content_type = source.content_type
        if self.path.protocol in _LOCAL_PROTOCOLS:
            self.fs.makedirs(self.path.parent.path, exist_ok=True)
        self._open()

    def write(self, data: bytes) -> None:
        """
        Append ``data`` to the staging file.

        :param data: the next bytes.
        """
        self._file.write(data)

    def rewind(self) -> None:
        """Throw the staging file away and start a new, empty one."""
        self._discard_file()
        self._remove(self.staging)
        self._open()

    # -- TransferWriter ------------------------------------------------------------------------------------

    def commit(self, result: DownloadResult) -> None:
        """
        Move the verified staging file onto the destination and record its integrity metadata.

        :param result: the finished download.
        """
        self._file.close()
        self._file = None
        staged = self.fs.size(self.staging.path)
        if staged != result.size:
            raise SeedanceIntegrityError(
                f"{self.staging} holds {staged} bytes but {result.size} were downloaded; not published."
            )
        self._publish(result)
        size = self.fs.size(self.path.path)
        if size != result.size:
            raise SeedanceIntegrityError(f"{self.path} holds {size} bytes after the move, not {result.size}.")
        self._published = False
        self._lineage()

    def abort(self) -> None:
        """Delete the staging file, and a destination (and sidecar) whose publication did not finish."""
        self._discard_file()
        self._remove(self.staging)
        if self._published:
            self._remove(self.path)
            self._remove(sidecar_path(self.path))
            self._published = False

    # -- internals ---------------------------------------------------------------------------------------

    def _open(self) -> None:
        # The filesystem itself, not ObjectStoragePath.open: its wrapper would report the staging file to the
        # lineage collector on every write.
        self._file = self.fs.open(self.staging.path, "wb")

    def _discard_file(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        discard = getattr(file, "discard", None)
        try:
            if callable(discard) and getattr(file, "autocommit", True) is False:
                discard()
            file.close()
        except Exception:
            self.log.debug(
                "Closing the staging file %s failed; it is deleted next.", self.staging, exc_info=True
            )

    def _remove(self, path: Any) -> None:
        try:
            if self.fs.exists(path.path):
                self.fs.rm(path.path)
        except Exception as exc:
            self.log.error("Could not delete %s: %s. Remove it by hand.", path, exc)

    def _publish(self, result: DownloadResult) -> None:
        """Put the staging file at the destination, with its metadata, then write the sidecar if wanted."""
        content_type = self.content_type or result.content_type
        metadata = {
            **self.metadata,
            SHA256_METADATA_KEY: result.sha256,
            CONTENT_TYPE_METADATA_KEY: content_type,
        }
        native = _has_object_metadata(self.fs)
        with_sidecar = bool(self.sidecar or (self.sidecar is None and not native))
        if with_sidecar:
            # A sidecar left from the file being replaced must not describe the new one, even for a moment.
            self._remove(sidecar_path(self.path))
        options = _copy_with_metadata(self.fs, result.size, metadata, content_type) if native else None
        self._published = True
        if options is not None:
            self.fs.copy(self.staging.path, self.path.path, **options)
            self._remove(self.staging)
        else:
            self.fs.mv(self.staging.path, self.path.path)
            if native:
                self.fs.setxattrs(self.path.path, **metadata)
        if with_sidecar:
            self._write_sidecar({**metadata, "size": result.size})

    def _write_sidecar(self, document: dict[str, Any]) -> None:
        """Write the sidecar under a hidden name, then rename it: complete or absent, never half-written."""
        final = sidecar_path(self.path)
        temporary = self.path.parent / f".{final.name}.{uuid.uuid4().hex}{STAGING_SUFFIX}"
        try:
            with self.fs.open(temporary.path, "wb") as handle:
                handle.write(json.dumps(document, indent=2, sort_keys=True).encode() + b"\n")
            self.fs.mv(temporary.path, final.path)
        except BaseException:
            self._remove(temporary)
            raise

    def _lineage(self) -> None:
        try:
            from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

            get_hook_lineage_collector().add_output_asset(context=self.path, uri=str(self.path))
        except Exception:  # lineage is a convenience: never fail a verified copy over it
            self.log.debug("Could not report lineage for %s", self.path, exc_info=True)


class SeedanceToObjectStorageOperator(SeedanceTransferBaseOperator):
    """
    Copy the videos of a Seedance request (or any http(s) files) to any Airflow object storage path.

    Works with every store ``ObjectStoragePath`` can attach (``file://``, ``gs://``, ``abfs://``, ``s3://``
    with s3fs...), streaming in constant memory with the same verification as the S3 operator. The integrity
    metadata goes into object metadata where the store supports it, else into a ``<name>.seedance.json``
    sidecar (see the module docstring).

    .. code-block:: python

        SeedanceToObjectStorageOperator(
            task_id="store",
            request_id="{{ ti.xcom_pull('generate')['request_id'] }}",
            dest_path="gs://my-bucket/videos/{{ ds }}/clip-{index}.mp4",
            dest_conn_id="google_cloud_default",
        )

    :param dest_path: the destination, a URL such as ``file:///data/videos/clip-{index}.mp4`` (templated).
        With several videos it must contain ``{index}`` (0-based), else the task fails before copying
        anything.
    :param dest_conn_id: the Airflow connection of the store (``None``: the store's default credentials).
    :param request_id: copy every video of this Seedance request (templated). Exactly one of ``request_id``
        and ``source_urls``.
    :param source_urls: copy these http(s) URLs: one URL or a list (templated).
    :param seedance_conn_id: the ``seedance`` connection used to read the result of ``request_id``.
    :param replace: overwrite existing files. When ``False``, an existing file recorded as a verified copy of
        the same source (metadata or sidecar) is skipped; anything else fails before copying.
    :param metadata_sidecar: write ``<name>.seedance.json``: ``None`` (default) when the store has no object
        metadata, ``True`` always, ``False`` never (then ``replace=False`` cannot recognise a previous copy).
    :param download_timeout: seconds allowed to connect to the source and between two reads.
    :param download_max_retries: retries of a download after a transient failure (renewed on progress).
    :param download_retry_backoff: first retry delay in seconds, doubled per attempt.
    :param download_max_resumes: interruptions one download survives in total (each waits a growing backoff).
    :param allow_private_networks: ``False`` refuses sources on private networks (loopback stays allowed;
        link-local / cloud-metadata addresses are always refused). See docs/transfer.md.
    :return: the URI of every copied file, in source order.
    """

    template_fields: Sequence[str] = ("request_id", "source_urls", "dest_path", "asset_extra")
    ui_color = "#c4b5fd"

    def __init__(
        self,
        *,
        dest_path: Any,
        dest_conn_id: str | None = None,
        request_id: str | None = None,
        source_urls: str | Sequence[str] | None = None,
        seedance_conn_id: str = "seedance_default",
        replace: bool = False,
        metadata_sidecar: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            request_id=request_id,
            source_urls=source_urls,
            seedance_conn_id=seedance_conn_id,
            replace=replace,
            **kwargs,
        )
        self.dest_path = dest_path
        self.dest_conn_id = dest_conn_id
        self.metadata_sidecar = metadata_sidecar
        self._template = ""
        self._conn_id: str | None = None
        self._paths: dict[str, Any] = {}

    def prepare_destination(self) -> None:
        """Check ``dest_path`` (a URL string or an ``ObjectStoragePath``) without touching the store."""
        path = self.dest_path
        conn_id = self.dest_conn_id
        if not isinstance(path, str):
            conn_id = conn_id or getattr(path, "conn_id", None)
            path = str(path) if path is not None else ""
        text = path.strip()
        if not text or text.endswith("/"):
            raise SeedanceConfigurationError(
                f"dest_path: {self.dest_path!r} must name a file, not a folder (e.g. "
                "'file:///data/videos/clip-{index}.mp4')."
            )
        self._template = text
        self._conn_id = conn_id

    def destinations(self, sources: list[TransferSource]) -> list[str]:
        """
        Return the destination URI of every source, ``{index}`` replaced.

        :param sources: the files to copy.
        """
        from airflow.sdk import ObjectStoragePath

        uris: list[str] = []
        for text in expand_index(self._template, len(sources), what="dest_path"):
            path = ObjectStoragePath(text, conn_id=self._conn_id)
            uri = str(path)
            self._paths[uri] = path
            uris.append(uri)
        return uris

    def existing_copy(self, uri: str) -> ExistingCopy | None:
        """
        Read the existing file's size and recorded metadata (object metadata or sidecar), if it exists.

        :param uri: the destination.
        """
        path = self._paths[uri]
        fs = path.fs
        if not fs.exists(path.path):
            return None
        size = int(fs.size(path.path) or 0)
        metadata: dict[str, Any] = {}
        if _has_object_metadata(fs):
            for key in (SHA256_METADATA_KEY, SOURCE_URL_METADATA_KEY):
                try:
                    metadata[key] = fs.getxattr(path.path, key)
                except (KeyError, FileNotFoundError):
                    metadata[key] = None
        sidecar = sidecar_path(path)
        if not metadata.get(SHA256_METADATA_KEY) and fs.exists(sidecar.path):
            try:
                with fs.open(sidecar.path, "rb") as handle:
                    recorded = json.loads(handle.read())
            except ValueError as exc:
                # Half-written by a crash: it proves nothing, so the file counts as one without metadata.
                self.log.warning("Ignoring %s: it is not valid JSON (%s).", sidecar, exc)
                recorded = None
            if isinstance(recorded, dict) and recorded.get("size") == size:
                metadata = recorded
        return ExistingCopy(
            uri=uri,
            size=size,
            sha256=metadata.get(SHA256_METADATA_KEY),
            source=metadata.get(SOURCE_URL_METADATA_KEY),
        )

    def new_writer(self, uri: str, source: TransferSource) -> TransferWriter:
        """
        Return the staging writer for one file.

        :param uri: the destination.
        :param source: the file being copied.
        """
        metadata = {SOURCE_URL_METADATA_KEY: source.identity}
        if source.request_id:
            metadata[REQUEST_ID_METADATA_KEY] = source.request_id
        return ObjectStorageWriter(
            self._paths[uri], metadata=metadata, sidecar=self.metadata_sidecar, logger=self.log
        )

    def close_destination(self) -> None:
        """Forget the resolved paths."""
        self._paths = {}


__all__ = [
    "SeedanceToObjectStorageOperator",
]
