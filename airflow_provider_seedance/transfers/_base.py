"""What every Seedance transfer operator shares: sources, destinations, idempotent reruns, XCom and Assets.

A concrete operator (S3, object storage) supplies three things: where each file goes, what already lies
there (:class:`ExistingCopy`), and a writer (a :class:`~._streaming.DownloadSink` that can also
``commit`` or ``abort``). This base validates the arguments before any network call, resolves a
``request_id`` into its video URLs, streams each file through :class:`~._streaming.StreamingDownload`
and decides, when ``replace=False``, whether an existing object is the same copy (skipped) or not (error).
"""

from __future__ import annotations

import ast
import json
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from airflow.sdk import BaseOperator, Context

from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceRequestFailedError,
    SeedanceTransferError,
)
from airflow_provider_seedance.hooks.retry import RETRY_WAIT_INITIAL_SECONDS
from airflow_provider_seedance.transfers._streaming import (
    DEFAULT_DOWNLOAD_MAX_RESUMES,
    DEFAULT_DOWNLOAD_MAX_RETRIES,
    DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
    DownloadResult,
    DownloadSink,
    SourceInfo,
    StreamingDownload,
    check_source_url,
    human_bytes,
    new_download_client,
    redact_url,
    source_identity,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

INDEX_FIELD = "{index}"
"""Replaced by the 0-based position of each video in the destination key or path."""

SHA256_METADATA_KEY = "sha256"
SOURCE_URL_METADATA_KEY = "source-url"
REQUEST_ID_METADATA_KEY = "seedance-request-id"


@dataclass(frozen=True)
class TransferSource:
    """
    One file to copy.

    :param url: the download URL (may carry a signed query string: never logged as is).
    :param index: its 0-based position among the request's videos or the given URLs.
    :param request_id: the Seedance request it came from, when the source was a ``request_id``.
    """

    url: str
    index: int
    request_id: str | None = None

    @property
    def shown(self) -> str:
        """The URL as logs show it (no query string, no credentials)."""
        return redact_url(self.url)

    @property
    def identity(self) -> str:
        """What the ``source-url`` metadata records and what an idempotent rerun compares."""
        return source_identity(self.url)


@dataclass(frozen=True)
class ExistingCopy:
    """
    What a destination already holds, as its metadata describes it.

    :param uri: the destination URI.
    :param size: its size in bytes.
    :param sha256: the ``sha256`` metadata, if present (a file larger than one part copied in one pass has
        none: its SHA-256 was reported, not stored).
    :param source: the ``source-url`` metadata, if present (only a copy by this provider has it).
    """

    uri: str
    size: int
    sha256: str | None
    source: str | None


@dataclass(frozen=True)
class CopiedObject:
    """
    One destination of a transfer, as pushed to XCom under the key ``objects``.

    :param uri: the destination URI.
    :param source_url: the source, without query string.
    :param size: bytes.
    :param sha256: hex SHA-256 of the bytes.
    :param content_type: the stored media type (``None`` for a skipped copy).
    :param skipped: ``True`` when an identical copy was already there (``replace=False``).
    """

    uri: str
    source_url: str
    size: int
    sha256: str | None
    content_type: str | None
    skipped: bool = False


class TransferWriter(DownloadSink, Protocol):
    """A download sink that publishes its bytes at one destination, atomically, or leaves nothing."""

    def commit(self, result: DownloadResult) -> None:
        """
        Publish the verified bytes at the destination, with the integrity metadata.

        :param result: the finished download (size, sha256, content type).
        """

    def abort(self) -> None:
        """Remove every trace of this write (staging objects, unfinished uploads); never raises."""


class _DigestOnly:
    """A sink that keeps nothing: used to hash a source whose size is unknown, to compare it."""

    def begin(self, source: SourceInfo) -> None:
        """Accept the source."""

    def write(self, data: bytes) -> None:
        """Drop the bytes (the download hashes them)."""

    def rewind(self) -> None:
        """Nothing to forget."""


def parse_source_urls(value: object) -> list[str]:
    """
    Turn ``source_urls`` (a URL, a list, or a rendered template of a list) into a list of checked URLs.

    A Jinja template such as ``"{{ ti.xcom_pull('generate')['video_urls'] }}"`` renders to the text of a
    Python list unless the DAG renders native objects: both forms are accepted.

    :param value: the operator's ``source_urls`` after templating.
    """
    items: object = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                items = json.loads(text)
            except ValueError:
                try:
                    items = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise SeedanceConfigurationError(
                        f"source_urls: could not read {text[:80]!r} as a list of URLs."
                    ) from None
        else:
            items = [text]
    if isinstance(items, (list, tuple)):
        urls = list(items)
    else:
        raise SeedanceConfigurationError(
            f"source_urls: must be a URL or a list of URLs, got {type(value).__name__}."
        )
    if not urls:
        raise SeedanceConfigurationError("source_urls: the list is empty; give at least one URL.")
    checked: list[str] = []
    for position, url in enumerate(urls):
        try:
            checked.append(check_source_url(url))
        except ValueError as err:
            raise SeedanceConfigurationError(f"source_urls[{position}]: {err}.") from None
    return checked


def expand_index(template: str, count: int, *, what: str) -> list[str]:
    """
    Return one destination per file by replacing ``{index}``; several files need it.

    :param template: the rendered ``dest_key`` / ``dest_path``.
    :param count: how many files are copied.
    :param what: the argument's name, for the error message.
    """
    if count > 1 and INDEX_FIELD not in template:
        raise SeedanceConfigurationError(
            f"{what}: {count} videos are to be copied but {template!r} does not contain {INDEX_FIELD}, "
            f"so they would overwrite each other. Add {INDEX_FIELD} (0-based), e.g. "
            f"'videos/{{{{ ds }}}}/clip-{INDEX_FIELD}.mp4'. Nothing was copied."
        )
    # str.replace, not str.format: keys may legitimately contain other braces.
    return [template.replace(INDEX_FIELD, str(index)) for index in range(count)]


class SeedanceTransferBaseOperator(BaseOperator):
    """
    Copy Seedance outputs (or any http(s) files) to a destination, streamed and verified.

    Subclasses implement :meth:`prepare_destination`, :meth:`destinations`, :meth:`existing_copy`,
    :meth:`new_writer` and :meth:`close_destination`.

    :param request_id: copy every video of this Seedance request's result (templated). Exactly one of
        ``request_id`` and ``source_urls``.
    :param source_urls: copy these http(s) URLs: one URL or a list (templated).
    :param seedance_conn_id: the ``seedance`` connection used to read the result of ``request_id``.
    :param replace: overwrite existing destinations. When ``False``, an existing destination that is a copy
        of the same source (same ``source-url`` metadata and size, plus ``sha256`` where it has one) is
        skipped, so a task retry is idempotent; any other existing object fails the task before anything is
        copied.
    :param download_timeout: seconds allowed to connect to the source and between two reads of its body.
    :param download_max_retries: retries of a download after a transient failure (429, 5xx, dropped or
        truncated connection, timeout); the budget is renewed whenever the download advances.
    :param download_retry_backoff: the first retry delay in seconds, doubled per attempt (plus jitter);
        a ``Retry-After`` header is honoured. Also the first wait before reconnecting after an interruption.
    :param download_max_resumes: interruptions one download survives in total, even when each advanced it;
        reconnects are spaced by a backoff that grows while interruptions come in quick succession.
    :param allow_private_networks: ``False`` refuses sources on private networks (``10/8``, ``172.16/12``,
        ``192.168/16``, ``100.64/10``, ``fc00::/7``...), checked on every resolved address and redirect hop.
        Loopback stays allowed; link-local and cloud-metadata addresses are always refused. The ``seedance``
        connection's extra ``allow_private_networks: false`` refuses them for every transfer using it
        (this flag can only tighten it).
    :param asset_extra: more JSON-serialisable metadata for the outlet Asset events (e.g. ``model_id`` or
        ``duration`` of the generation, which the request's result does not always report). The keys the
        transfer sets itself (``uris``, ``sha256``, ``sizes``, ``objects``) are never replaced.
    """

    template_fields: Sequence[str] = ("request_id", "source_urls")
    ui_color = "#c4b5fd"

    def __init__(
        self,
        *,
        request_id: str | None = None,
        source_urls: str | Sequence[str] | None = None,
        seedance_conn_id: str = "seedance_default",
        replace: bool = False,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_SECONDS,
        download_max_retries: int = DEFAULT_DOWNLOAD_MAX_RETRIES,
        download_retry_backoff: float = RETRY_WAIT_INITIAL_SECONDS,
        download_max_resumes: int = DEFAULT_DOWNLOAD_MAX_RESUMES,
        allow_private_networks: bool = True,
        asset_extra: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if asset_extra is not None and not isinstance(asset_extra, (Mapping, str)):
            raise SeedanceConfigurationError(
                "asset_extra: must be a dict of metadata for the Asset events, got "
                f"{type(asset_extra).__name__}."
            )
        self.asset_extra = asset_extra
        self.request_id = request_id
        self.source_urls = source_urls
        self.seedance_conn_id = seedance_conn_id
        self.replace = replace
        self.download_timeout = download_timeout
        self.download_max_retries = download_max_retries
        self.download_retry_backoff = download_retry_backoff
        self.download_max_resumes = download_max_resumes
        self.allow_private_networks = allow_private_networks
        self._request_info: dict[str, Any] = {}
        self._sources: list[TransferSource] = []
        self._copied: list[CopiedObject] = []

    # -- what subclasses provide -----------------------------------------------------------------------

    @abstractmethod
    def prepare_destination(self) -> None:
        """Validate the destination arguments (after templating, before any network call)."""

    @abstractmethod
    def destinations(self, sources: list[TransferSource]) -> list[str]:
        """
        Return one destination URI per source, failing before any copy when they cannot be built.

        :param sources: the files to copy.
        """

    @abstractmethod
    def existing_copy(self, uri: str) -> ExistingCopy | None:
        """
        Describe what ``uri`` already holds, or return ``None`` when it does not exist.

        :param uri: a destination from :meth:`destinations`.
        """

    @abstractmethod
    def new_writer(self, uri: str, source: TransferSource) -> TransferWriter:
        """
        Return a writer that publishes one file at ``uri``.

        :param uri: the destination.
        :param source: the file being copied.
        """

    def close_destination(self) -> None:
        """Release destination clients (called once at the end, success or not)."""

    def stream_into(self, download: StreamingDownload, writer: TransferWriter) -> DownloadResult:
        """
        Copy one file into ``writer`` (one stream here; a destination may fetch ranges in parallel).

        :param download: the download of the file.
        :param writer: the destination's writer.
        """
        return download.copy_to(writer)

    # -- the copy ------------------------------------------------------------------------------------------

    def check_source_arguments(self) -> list[str] | str:
        """Validate the source arguments (after templating): return the URLs, or the request id to resolve."""
        request_id = self.request_id.strip() if isinstance(self.request_id, str) else self.request_id
        has_request = request_id not in (None, "")
        has_urls = self.source_urls not in (None, "", [], ())
        if has_request == has_urls:
            given = "both" if has_request else "neither"
            raise SeedanceConfigurationError(
                f"{type(self).__name__}: give exactly one of request_id (copy every video of a Seedance "
                f"request) or source_urls (copy these URLs); {given} was given."
            )
        if has_request:
            from airflow_provider_seedance.hooks.seedance import check_request_id

            return check_request_id(request_id)
        return parse_source_urls(self.source_urls)

    def resolve_sources(self, spec: list[str] | str) -> list[TransferSource]:
        """
        Turn the checked source arguments into files: a request id becomes every video of its result.

        :param spec: what :meth:`check_source_arguments` returned.
        """
        if isinstance(spec, list):
            return [TransferSource(url=url, index=index) for index, url in enumerate(spec)]
        from airflow_provider_seedance.hooks.seedance import SeedanceHook
        from airflow_provider_seedance.models import output_video_urls

        hook = SeedanceHook(self.seedance_conn_id)
        try:
            result = hook.get_result(spec)
        finally:
            hook.close()
        # The same success rule as the generation operators, the sensor and the trigger.
        if not result.succeeded:
            detail = f": {result.error_text}" if result.error_text else ""
            if result.state.is_active():
                advice = (
                    "it has not finished yet; run the transfer after the generation task (or a "
                    "SeedanceRequestSensor) has succeeded"
                )
            else:
                advice = "there is no video to copy"
            raise SeedanceRequestFailedError(
                f"Seedance request {spec} is {result.status!r}{detail}: {advice}.",
                request_id=spec,
                status=result.status,
            )
        self._request_info = request_info(spec, result)
        urls = output_video_urls(result.output)
        if not urls:
            raise SeedanceTransferError(
                f"Seedance request {spec} succeeded but its output has no video "
                f"(output keys: {sorted((result.output or {}).keys())}); nothing to copy."
            )
        checked: list[TransferSource] = []
        for index, url in enumerate(urls):
            try:
                checked.append(TransferSource(url=check_source_url(url), index=index, request_id=spec))
            except ValueError as err:
                raise SeedanceTransferError(
                    f"Seedance request {spec}: output video {index}: {err}."
                ) from None
        self.log.info("Seedance request %s has %d video(s) to copy.", spec, len(checked))
        return checked

    def execute(self, context: Context) -> list[str]:
        """
        Copy every source to its destination and return the destination URIs.

        :param context: the task context.
        """
        self._request_info, self._sources, self._copied = {}, [], []
        self.asset_extra = self._checked_asset_extra()
        spec = self.check_source_arguments()
        self.prepare_destination()
        try:
            sources = self.resolve_sources(spec)
            self._sources = sources
            uris = self.destinations(sources)
            if len(set(uris)) != len(uris):
                raise SeedanceConfigurationError(
                    f"{type(self).__name__}: several videos map to the same destination ({uris}); "
                    "nothing was copied."
                )
            existing = self._check_existing(sources, uris)
            copied: list[CopiedObject] = []
            client = new_download_client(
                self.download_timeout, allow_private_networks=self._private_networks_allowed()
            )
            try:
                for source, uri in zip(sources, uris, strict=True):
                    copied.append(self._copy_one(client, source, uri, existing.get(uri)))
            finally:
                client.close()
        finally:
            self.close_destination()
        self._copied = copied
        self._publish(context, copied)
        return [item.uri for item in copied]

    def _private_networks_allowed(self) -> bool:
        """The operator's ``allow_private_networks``, tightened by the ``seedance`` connection's extra."""
        from airflow_provider_seedance.downloads import connection_allows_private_networks

        return bool(self.allow_private_networks) and connection_allows_private_networks(self.seedance_conn_id)

    def _check_existing(self, sources: list[TransferSource], uris: list[str]) -> dict[str, ExistingCopy]:
        """With ``replace=False``, fail before copying anything when a destination holds something else."""
        if self.replace:
            return {}
        found: dict[str, ExistingCopy] = {}
        for source, uri in zip(sources, uris, strict=True):
            existing = self.existing_copy(uri)
            if existing is None:
                continue
            if existing.source != source.identity:
                recorded = (
                    f"it records source-url {existing.source!r}"
                    if existing.source
                    else "it has no source-url metadata, so it was not written by this operator"
                )
                raise SeedanceTransferError(
                    f"{uri} already exists and is not a copy of {source.shown} ({recorded}). Set "
                    "replace=True to overwrite it, or choose another destination. Nothing was copied."
                )
            found[uri] = existing
        return found

    def _copy_one(
        self, client: Any, source: TransferSource, uri: str, existing: ExistingCopy | None
    ) -> CopiedObject:
        download = StreamingDownload(
            source.url,
            client=client,
            max_retries=self.download_max_retries,
            backoff=self.download_retry_backoff,
            max_resumes=self.download_max_resumes,
            label=f"{source.shown} -> {uri}",
            logger=self.log,
        )
        try:
            if existing is not None:
                return self._reuse(download, source, existing)
            writer = self.new_writer(uri, source)
            started = time.monotonic()
            try:
                result = self.stream_into(download, writer)
                writer.commit(result)
            except BaseException:
                # Whatever failed (download, upload, verification, a kill signal), leave nothing behind.
                writer.abort()
                raise
            seconds = max(time.monotonic() - started, 1e-6)
        finally:
            download.close()
        retries = (
            f", {result.resumes} resume(s), {result.restarts} restart(s)"
            if result.resumes or result.restarts
            else ""
        )
        self.log.info(
            "Copied %s to %s: %s in %.1f s (%.1f MB/s), sha256 %s, %s%s.",
            source.shown,
            uri,
            human_bytes(result.size),
            seconds,
            result.size / seconds / 1e6,
            result.sha256,
            result.content_type,
            retries,
        )
        return CopiedObject(
            uri=uri,
            source_url=source.identity,
            size=result.size,
            sha256=result.sha256,
            content_type=result.content_type,
        )

    def _reuse(
        self, download: StreamingDownload, source: TransferSource, existing: ExistingCopy
    ) -> CopiedObject:
        """Decide whether the existing copy of this source can stand (skip) or not (error)."""
        skipped = CopiedObject(
            uri=existing.uri,
            source_url=source.identity,
            size=existing.size,
            sha256=existing.sha256,
            content_type=None,
            skipped=True,
        )
        try:
            info = download.open()
        except SeedanceTransferError as err:
            if getattr(err, "http_status", None) in (403, 404, 410):
                # The link expired since the verified copy was made (e.g. a retry hours later): the copy is
                # what the task is for, so it stands.
                self.log.warning(
                    "%s already holds a copy of %s (sha256 %s); the source is no longer "
                    "available (%s), keeping the copy.",
                    existing.uri,
                    source.shown,
                    existing.sha256,
                    err,
                )
                return skipped
            raise
        size = info.size
        same_digest = True
        if size is None:
            # No announced size: read the source (without storing it) to compare its size, and its SHA-256
            # with the recorded one where the object has it.
            hashed = download.copy_to(_DigestOnly())
            size = hashed.size
            same_digest = existing.sha256 is None or hashed.sha256 == existing.sha256
        if size != existing.size or not same_digest:
            raise SeedanceTransferError(
                f"{existing.uri} already holds a copy of {source.shown}, but the source now differs "
                f"(size {size} vs {existing.size} stored"
                f"{'' if same_digest else ', another SHA-256'}). Set replace=True to overwrite it."
            )
        self.log.info(
            "%s already holds this copy of %s (%d bytes, sha256 %s): skipped (replace=False).",
            existing.uri,
            source.shown,
            existing.size,
            existing.sha256,
        )
        return skipped

    def _publish(self, context: Context, copied: list[CopiedObject]) -> None:
        """Push the per-object details to XCom and attach them to the outlet Asset events."""
        objects = [asdict(item) for item in copied]
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="objects", value=objects)
        if not self.outlets:
            return
        from airflow.sdk import Asset, AssetAlias

        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        common = self._event_extra()
        per_object = [self._object_extra(item, position) for position, item in enumerate(copied)]
        summary: dict[str, Any] = {
            **common,
            "uris": [item.uri for item in copied],
            "sha256": [item.sha256 for item in copied],
            "sizes": [item.size for item in copied],
            "objects": per_object,
        }
        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):
                # One concrete Asset per video, so downstream DAGs can be scheduled on each new file.
                for item, extra in zip(copied, per_object, strict=True):
                    outlet_events[outlet].add(Asset(item.uri), extra={**common, **extra})
            elif isinstance(outlet, Asset):
                outlet_events[outlet].extra.update(summary)

    def _checked_asset_extra(self) -> dict[str, Any] | None:
        """Return ``asset_extra`` after templating as a dict (a rendered JSON object string is accepted)."""
        value: Any = self.asset_extra
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, Mapping):
            raise SeedanceConfigurationError(
                f"asset_extra: must be a dict (or a JSON object string) of metadata for the Asset events, "
                f"got {self.asset_extra!r:.80}. Nothing was copied."
            )
        return dict(value)

    def _event_extra(self) -> dict[str, Any]:
        """Metadata every Asset event of this run carries: the user's ``asset_extra``, then the request's."""
        extra: dict[str, Any] = self._checked_asset_extra() or {}
        request_id = self.request_id.strip() if isinstance(self.request_id, str) else None
        if request_id:
            extra["request_id"] = request_id
        extra.update({k: v for k, v in self._request_info.items() if v is not None})
        return extra

    def _object_extra(self, item: CopiedObject, position: int) -> dict[str, Any]:
        """The metadata of one copied file: where it is, its size and digest, where it came from."""
        source = self._sources[position] if position < len(self._sources) else None
        extra: dict[str, Any] = {
            "uri": item.uri,
            "sha256": item.sha256,
            "size": item.size,
            "source_url": item.source_url,
        }
        if source is not None:
            extra["index"] = source.index
            if source.request_id:
                extra["request_id"] = source.request_id
        return extra

    # -- OpenLineage --------------------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """
        Describe the copy for OpenLineage: the source URLs in, one dataset per destination object out.

        Inputs are named ``namespace=scheme://host``, ``name=path`` (no query string, no credentials);
        outputs follow the Amazon provider's convention, ``namespace=s3://bucket``, ``name=key`` (likewise
        ``gs://bucket`` or ``file``/path for other object stores), each with a ``version`` facet holding the
        copy's SHA-256. Returns ``None`` when the OpenLineage provider is not installed.

        :param task_instance: the finished task instance (unused: this try's copies are kept on the task).
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        inputs = [
            Dataset(namespace=ns, name=name) for ns, name in map(uri_dataset, self._source_urls()) if ns
        ]
        outputs = []
        for copied in self._copied:
            namespace, name = uri_dataset(copied.uri)
            if namespace:
                outputs.append(Dataset(namespace=namespace, name=name, facets=_version_facets(copied.sha256)))
        return OperatorLineage(
            inputs=[d for d in inputs if d is not None],
            outputs=[d for d in outputs if d is not None],
        )

    def _source_urls(self) -> list[str]:
        seen: list[str] = []
        for url in [source.url for source in self._sources] or [item.source_url for item in self._copied]:
            if url not in seen:
                seen.append(url)
        return seen


def _version_facets(sha256: str | None) -> dict[str, Any]:
    """
    Return OpenLineage's ``version`` dataset facet holding the copy's SHA-256 (empty without the client).

    :param sha256: the object's SHA-256, if known.
    """
    if not sha256:
        return {}
    try:
        from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
    except ImportError:
        return {}
    return {"version": DatasetVersionDatasetFacet(datasetVersion=sha256)}


def uri_dataset(uri: str) -> tuple[str, str]:
    """
    Name a URI the OpenLineage way: ``(namespace, name)``; ``("", "")`` when it cannot be named.

    ``s3://bucket/key`` gives ``("s3://bucket", "key")`` (the Amazon provider's convention),
    ``https://host:port/path?sig`` gives ``("https://host:port", "/path")`` and ``file:///p`` gives
    ``("file", "/p")``. Credentials and query strings are never part of a name.

    :param uri: the URI.
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "", ""
    scheme = parts.scheme.lower()
    if scheme == "file":
        return "file", parts.path or "/"
    if not scheme or not parts.hostname:
        return "", ""
    host = parts.hostname + (f":{port}" if port else "")
    if scheme in ("http", "https"):
        return f"{scheme}://{host}", parts.path or "/"
    # Object stores: the bucket is the namespace, the key (no leading slash) the name.
    return f"{scheme}://{host}", parts.path.lstrip("/") or "/"


def request_info(request_id: str, result: Any) -> dict[str, Any]:
    """
    Return what a request's result says about the generation: ``model_id`` and ``duration`` when reported.

    The documented result has neither, so both are optional: they are read from the result's extra keys (or
    its ``input``), then from its output.

    :param request_id: the request.
    :param result: the :class:`~airflow_provider_seedance.models.ResultResponse`.
    """
    extra: Mapping[str, Any] = getattr(result, "model_extra", None) or {}
    output: Mapping[str, Any] = getattr(result, "output", None) or {}
    raw_input = extra.get("input")
    given: Mapping[str, Any] = raw_input if isinstance(raw_input, Mapping) else {}
    info: dict[str, Any] = {"request_id": request_id}
    model_id = extra.get("model_id") or extra.get("model")
    if isinstance(model_id, str) and model_id:
        info["model_id"] = model_id
    for source in (extra, given, output):
        duration = source.get("duration")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
            info["duration"] = duration
            break
    return info


__all__ = [
    "INDEX_FIELD",
    "REQUEST_ID_METADATA_KEY",
    "SHA256_METADATA_KEY",
    "SOURCE_URL_METADATA_KEY",
    "CopiedObject",
    "ExistingCopy",
    "SeedanceTransferBaseOperator",
    "TransferSource",
    "TransferWriter",
    "expand_index",
    "parse_source_urls",
    "request_info",
    "uri_dataset",
]
