"""The streaming core shared by the transfer operators: download a URL in constant memory, verified.

A download is one GET streamed chunk by chunk into a :class:`DownloadSink` (an S3 multipart upload, an
object-storage file...). The bytes are hashed (SHA-256) as they pass, counted against ``Content-Length``,
and never accumulated beyond what the sink buffers. Transient failures (connect errors, timeouts, dropped
connections, truncated bodies, 408/429/5xx) are retried through the provider's single retry policy
(:mod:`airflow_provider_seedance.hooks.retry`); after an interruption the download resumes with
``Range: bytes=N-`` when the server answers ``206``, and otherwise starts again from byte 0 after telling
the sink to :meth:`~DownloadSink.rewind`.

Downloads use the provider's download client
(:func:`airflow_provider_seedance.downloads.new_download_client`): never the hook's client, so the RunComfy
API token (an ``Authorization`` header) can never reach a CDN or any other host; URLs with credentials and
link-local and cloud-metadata addresses are refused on every hop.

A server may answer a range with fewer bytes than asked (some CDNs cap every ``206``): the download asks
again from where each complete answer ends until the size announced by ``Content-Length`` or by the first
``Content-Range`` total is reached. A copy whose size was never announced is accepted only from one
uninterrupted ``200`` answer: after a break, a resume that does not name the total starts over from byte 0.
Reconnects after an interruption are spaced by a growing backoff and bounded in number
(:data:`DEFAULT_DOWNLOAD_MAX_RESUMES`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from airflow_provider_seedance import __version__
from airflow_provider_seedance.downloads import new_download_client as _new_client
from airflow_provider_seedance.downloads import url_refusal
from airflow_provider_seedance.exceptions import (
    SeedanceConnectionError,
    SeedanceIntegrityError,
    SeedanceRateLimitError,
    SeedanceServerError,
    SeedanceTransferError,
    SeedanceTransientError,
)
from airflow_provider_seedance.hooks.retry import (
    RETRY_JITTER_SECONDS,
    RETRY_WAIT_INITIAL_SECONDS,
    RETRY_WAIT_MAX_SECONDS,
    BackoffWait,
    parse_retry_after,
    retrying,
)
from airflow_provider_seedance.models import url_problem

log = logging.getLogger(__name__)

MiB = 1024 * 1024

DEFAULT_PART_SIZE = 8 * MiB
"""Bytes buffered per upload part: above S3's 5 MiB minimum part size, small enough to keep memory flat."""

MIN_PART_SIZE = 5 * MiB
"""S3 rejects multipart parts (except the last) smaller than this."""


DEFAULT_CONTENT_TYPE = "video/mp4"
"""Content type stored when the source does not send one (Seedance outputs are MP4 files)."""

WEB_PAGE_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})
"""Media types that are a web page, never a generated file: a CDN's "link expired" or sign-in page, sent
with a 200, is refused instead of being stored as the video."""

DEFAULT_DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Seconds allowed to connect, and between two reads of the body (not for the whole download)."""

DEFAULT_DOWNLOAD_MAX_RETRIES = 5
"""Retries of a download after a transient failure; the budget is renewed whenever the download advances."""

DEFAULT_DOWNLOAD_MAX_RESUMES = 30
"""Interruptions one download survives in total, even when each attempt advanced it (then it fails)."""

RESUME_STREAK_RESET_SECONDS = 30.0
"""An attempt that streamed this long before breaking resets the resume backoff to its first delay."""

PROGRESS_LOG_PERCENT_STEP = 10
"""Log progress every time this many more percent of the file have been copied..."""

PROGRESS_LOG_INTERVAL_SECONDS = 15.0
"""...or when this many seconds passed since the last progress line (sizes unknown, slow links)."""

PROGRESS_LOG_MIN_INTERVAL_SECONDS = 2.0
"""Percent steps closer together than this are not logged: a clip copied in a second gets one final line."""

USER_AGENT = f"airflow-provider-seedance/{__version__} (transfer)"

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------------------


def check_source_url(url: object) -> str:
    """
    Return ``url`` stripped when it is an absolute http(s) URL with a host, else raise ``ValueError``.

    :param url: the candidate source URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"a source URL must be a non-empty string, got {url!r}")
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError as err:  # e.g. a bracketed host that is no IPv6 address
        raise ValueError(f"a source URL must be well-formed: {err}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"a source URL must be an absolute http:// or https:// URL, got {redact_url(text)!r}"
        )
    problem = url_problem(text, parts)
    if problem is not None:
        raise ValueError(f"a source URL must be well-formed: {problem} (got {redact_url(text)!r})")
    rule = url_refusal(text)
    if rule is not None:
        raise ValueError(f"{rule} (got {redact_url(text)!r})")
    return text


def redact_url(url: str) -> str:
    """
    Return ``url`` without credentials, query string or fragment, for logs and messages.

    Signed CDN links carry expiring tokens in their query string: those never reach a log line.

    :param url: the URL to show.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable host, or a port out of range
        return "<unparseable URL>"
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    suffix = "?..." if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + suffix


_PRINTABLE_ASCII = "".join(map(chr, range(0x20, 0x7F)))


def source_identity(url: str) -> str:
    """
    Return the stable identity of a source URL: scheme, host and path, without credentials or query.

    It is what the ``source-url`` metadata records and what an idempotent rerun compares: a signed link
    fetched again later carries a different signature but names the same file.

    S3 metadata is ASCII only (botocore refuses anything else before sending), so a character outside
    ASCII, in a file name such as ``视频.mp4`` or a host, is percent-encoded as UTF-8; an ASCII URL is
    recorded exactly as before.

    :param url: the source URL.
    """
    return quote(redact_url(url).removesuffix("?..."), safe=_PRINTABLE_ASCII)


# ---------------------------------------------------------------------------------------------------------
# What a download produces and where it goes
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    """
    What the source's first answer said about the file.

    :param url: the URL requested.
    :param size: the full size in bytes (``Content-Length``, or the total of a ``Content-Range``), if known.
    :param content_type: the media type to store (the response's, else ``video/mp4``).
    :param content_encoding: the response's ``Content-Encoding`` when not ``identity`` (stored as is).
    :param etag: a strong ``ETag`` usable in ``If-Range``, if any.
    :param last_modified: the ``Last-Modified`` header, if any.
    :param accepts_ranges: ``False`` when the server said ``Accept-Ranges: none``.
    """

    url: str
    size: int | None
    content_type: str
    content_encoding: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    accepts_ranges: bool = True


@dataclass(frozen=True)
class DownloadResult:
    """
    A finished, verified download.

    :param url: the URL downloaded.
    :param size: bytes received (equal to the announced size when one was announced).
    :param sha256: hex SHA-256 of the bytes.
    :param content_type: the media type to store.
    :param content_encoding: the ``Content-Encoding`` to store, if any.
    :param seconds: wall time of the download, including retries.
    :param resumes: how many times the download resumed with a Range request.
    :param restarts: how many times it started again from byte 0.
    """

    url: str
    size: int
    sha256: str
    content_type: str
    content_encoding: str | None
    seconds: float
    resumes: int = 0
    restarts: int = 0


class DownloadSink(Protocol):
    """Where the downloaded bytes go, in order. The caller commits or aborts it after the download."""

    def begin(self, source: SourceInfo) -> None:
        """
        Prepare for the bytes of ``source`` (called once, before the first :meth:`write`).

        :param source: what the source announced.
        """

    def write(self, data: bytes) -> None:
        """
        Take the next bytes of the file.

        :param data: the next chunk, as received from the network (tens of KiB).
        """

    def rewind(self) -> None:
        """Forget every byte written so far: the download starts again from byte 0."""


# ---------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------


def human_bytes(count: float) -> str:
    """
    Format a byte count with a binary unit (``12.3 MiB``).

    :param count: the number of bytes.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover - the loop always returns


@dataclass
class TransferProgress:
    """
    Log a copy's progress (bytes, percent, MB/s) every :data:`PROGRESS_LOG_PERCENT_STEP` percent or
    :data:`PROGRESS_LOG_INTERVAL_SECONDS` seconds, whichever comes first.

    :param label: what is being copied (``source -> destination``), already redacted.
    :param total: the expected size, if known.
    :param logger: where to log.
    """

    label: str
    total: int | None = None
    logger: Any = field(default=log)
    # Read at creation, so the module constants stay the one place to tune the cadence.
    percent_step: int = field(default_factory=lambda: PROGRESS_LOG_PERCENT_STEP)
    interval: float = field(default_factory=lambda: PROGRESS_LOG_INTERVAL_SECONDS)
    min_interval: float = field(default_factory=lambda: PROGRESS_LOG_MIN_INTERVAL_SECONDS)
    done: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last_log: float = field(default_factory=time.monotonic)
    _next_percent: int = 0

    def __post_init__(self) -> None:
        self._next_percent = self.percent_step

    def update(self, done: int) -> None:
        """
        Record that ``done`` bytes have been copied, logging when a step or the interval is reached.

        :param done: bytes copied so far (it goes back to 0 when the download restarts).
        """
        self.done = done
        now = time.monotonic()
        if self.total:
            percent = 100 * done // self.total
            if percent >= self._next_percent and done < self.total:
                self._next_percent = (percent // self.percent_step + 1) * self.percent_step
                if now - self._last_log >= self.min_interval:
                    self._log(now)
                return
        if now - self._last_log >= self.interval:
            self._log(now)

    def restarted(self) -> None:
        """Note that the download starts again from byte 0."""
        self.done = 0
        self._next_percent = self.percent_step

    def _log(self, now: float) -> None:
        self._last_log = now
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed / 1e6
        if self.total:
            self.logger.info(
                "Copying %s: %s of %s (%d%%), %.1f MB/s",
                self.label,
                human_bytes(self.done),
                human_bytes(self.total),
                100 * self.done // self.total,
                rate,
            )
        else:
            self.logger.info("Copying %s: %s so far, %.1f MB/s", self.label, human_bytes(self.done), rate)

    def finished(self) -> float:
        """Return the seconds elapsed since the copy started (the caller logs the final line)."""
        return max(time.monotonic() - self._started, 1e-6)


# ---------------------------------------------------------------------------------------------------------
# The download
# ---------------------------------------------------------------------------------------------------------


def new_download_client(
    timeout: float = DEFAULT_DOWNLOAD_TIMEOUT_SECONDS, *, allow_private_networks: bool = True
) -> httpx.Client:
    """
    Create the transfers' download client: the provider's download client with the transfer's User-Agent.

    :param timeout: seconds allowed to connect and between two reads.
    :param allow_private_networks: ``False`` refuses private-network addresses (loopback stays allowed).
    """
    return _new_client(timeout=timeout, allow_private_networks=allow_private_networks, user_agent=USER_AGENT)


class Resume(Exception):
    """Raised inside an attempt that advanced the download before failing: retry with a fresh budget."""

    def __init__(self, cause: SeedanceTransientError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def broke_off(shown: str, received: int, exc: httpx.HTTPError) -> SeedanceConnectionError:
    """
    Return the error of a download whose connection broke off while the body was arriving.

    :param shown: the download as logs show it (its redacted URL, and the part where there are several).
    :param received: the bytes received before the break.
    :param exc: what httpx raised.
    """
    return SeedanceConnectionError(
        f"Download of {shown} broke off after {human_bytes(received)}: {type(exc).__name__}: {exc}"
    )


@contextmanager
def resume_on_progress(progress: Callable[[], int]) -> Iterator[None]:
    """
    Turn a transient failure into :class:`Resume` when the download advanced inside the block.

    :param progress: returns how many bytes have arrived so far (read before and after the block).
    """
    before = progress()
    try:
        yield
    except SeedanceTransientError as exc:
        if progress() > before:
            raise Resume(exc) from exc
        raise


class StreamingDownload:
    """
    Download one URL into a :class:`DownloadSink`, verified, in constant memory.

    Use :meth:`open` to read the source's headers (e.g. to decide whether a copy is needed), then
    :meth:`copy_to` to stream the body; :meth:`close` releases the connection if the body is not wanted.

    :param url: the http(s) URL of the file.
    :param client: a plain client from :func:`new_download_client` (never one carrying a token).
    :param max_retries: retries after a transient failure; renewed whenever the download advances.
    :param backoff: the first retry delay in seconds (doubled per attempt, plus jitter); also the first
        delay before reconnecting after an interruption that advanced the download.
    :param max_resumes: interruptions survived in total (each one waits, the wait growing while they
        come in quick succession); one more fails the download.
    :param label: how progress lines name the copy (the caller adds the destination).
    :param logger: where to log.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client,
        max_retries: int = DEFAULT_DOWNLOAD_MAX_RETRIES,
        backoff: float = RETRY_WAIT_INITIAL_SECONDS,
        max_resumes: int = DEFAULT_DOWNLOAD_MAX_RESUMES,
        label: str | None = None,
        logger: Any = None,
    ) -> None:
        self.url = check_source_url(url)
        self.client = client
        self.max_retries = max(0, int(max_retries))
        self.max_resumes = max(0, int(max_resumes))
        self.backoff = max(0.0, float(backoff))
        self.wait = BackoffWait(initial=backoff, jitter=min(RETRY_JITTER_SECONDS, backoff))
        self.shown = redact_url(self.url)
        self.label = label or self.shown
        self.log = logger or log
        self.info: SourceInfo | None = None
        self._response: httpx.Response | None = None
        self._ranges = True
        self._received = 0
        self._high_water = 0
        self._hasher = hashlib.sha256()
        self._resumes = 0
        self._restarts = 0
        self._interruptions = 0
        self._streak = 0
        self._continuing = False
        self._range_end: int | None = None
        self._progress: TransferProgress | None = None

    # -- public ----------------------------------------------------------------------------------------

    def open(self) -> SourceInfo:
        """Send the first GET (retrying transient failures) and return what the source announced."""
        if self.info is None:
            for attempt in retrying(f"download of {self.shown}", self.max_retries, self.wait):
                with attempt:
                    self._response = self._request(0)
            if self.info is None:  # pragma: no cover - _request sets it or raises
                raise SeedanceTransferError(f"No answer from {self.shown}.")
        return self.info

    def copy_to(self, sink: DownloadSink) -> DownloadResult:
        """
        Stream the whole file into ``sink``, resuming or restarting after transient failures.

        :param sink: where the bytes go; the caller commits or aborts it afterwards.
        """
        info = self.open()
        self._progress = TransferProgress(self.label, info.size, self.log)
        sink.begin(info)
        while True:
            started = time.monotonic()
            try:
                for attempt in retrying(f"download of {self.shown}", self.max_retries, self.wait):
                    with attempt:
                        started = time.monotonic()
                        self._attempt(sink)
                break
            except Resume as interrupted:
                # This attempt moved the download forward before failing: a link that drops every few
                # hundred MB must still finish, so the retry budget starts again; but a link that drops
                # every few KiB must neither reconnect back to back nor forever.
                self._interruptions += 1
                if self._interruptions > self.max_resumes:
                    raise SeedanceConnectionError(
                        f"Download of {self.shown} was interrupted {self._interruptions} times (the limit is "
                        f"{self.max_resumes}, download_max_resumes); the link is too unstable. Last error: "
                        f"{interrupted.cause}"
                    ) from None
                delay = self._resume_delay(time.monotonic() - started)
                self.log.warning(
                    "Download of %s interrupted after %s (%s); resuming in %.2f s (interruption %d of at "
                    "most %d)",
                    self.shown,
                    human_bytes(self._received),
                    interrupted.cause,
                    delay,
                    self._interruptions,
                    self.max_resumes,
                )
                time.sleep(delay)
        if self._received == 0:
            # Announced nothing and sent nothing (chunked): as empty as a Content-Length of 0.
            raise _empty_source(self.shown)
        seconds = self._progress.finished()
        return DownloadResult(
            url=self.url,
            size=self._received,
            sha256=self._hasher.hexdigest(),
            content_type=info.content_type,
            content_encoding=info.content_encoding,
            seconds=seconds,
            resumes=self._resumes,
            restarts=self._restarts,
        )

    def close(self) -> None:
        """Release the open response, if any (e.g. when the copy turned out to be unnecessary)."""
        if self._response is not None:
            self._response.close()
            self._response = None

    # -- seams for the parallel ranged download (transfers/_ranged.py) -----------------------------------

    def check_response(self, response: httpx.Response) -> None:
        """
        Raise what this download raises for ``response``'s status (408/429/5xx as retryable errors).

        :param response: an answer of the source.
        """
        self._check_status(response)

    def send_get(self, first: int | None = None, last: int | None = None) -> httpx.Response:
        """
        Send one streamed GET of the source, of bytes ``first-last`` when given; leave the answer open.

        A ranged request carries ``If-Range``, so a file that changed since the first answer comes whole
        (200) instead of as a part of something else. A transport failure raises a retryable error.

        :param first: the first byte wanted (``None``: the whole file).
        :param last: the last byte wanted (``None``: to the end).
        """
        headers = {"Accept-Encoding": "identity"}
        about = ""
        if first is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
            if self.validator:
                headers["If-Range"] = self.validator
            if last is not None:
                about = f" (bytes {first}-{last})"
        try:
            request = self.client.build_request("GET", self.url, headers=headers)
            return self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise SeedanceConnectionError(
                f"Download of {self.shown}{about} failed: {type(exc).__name__}: {exc}"
            ) from None

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` validator of the first answer (its strong ``ETag``, else ``Last-Modified``)."""
        return (self.info.etag or self.info.last_modified) if self.info else None

    # -- internals ---------------------------------------------------------------------------------------

    def _resume_delay(self, lasted: float) -> float:
        """Wait before reconnecting: doubled per quick interruption in a row, reset after a long run."""
        self._streak = 1 if lasted >= RESUME_STREAK_RESET_SECONDS else self._streak + 1
        backoff = min(self.backoff * 2 ** (self._streak - 1), RETRY_WAIT_MAX_SECONDS)
        return backoff + random.uniform(0, self.wait.jitter)

    def _attempt(self, sink: DownloadSink) -> None:
        with resume_on_progress(lambda: self._high_water):
            self._stream(sink)

    def _stream(self, sink: DownloadSink) -> None:
        while not self._stream_one(sink):
            # A complete answer to a range, shorter than the file (a CDN capping its 206s): ask for the rest
            # at once; this is no failure, so no backoff and no retry budget is spent.
            self._continuing = True

    def _stream_one(self, sink: DownloadSink) -> bool:
        """Stream one answer; return ``True`` once the file is complete, ``False`` if a range ended short."""
        response = self._response
        self._response = None
        if response is None:
            response = self._request(self._received, sink)
        range_end = self._range_end
        assert self._progress is not None
        try:
            # Chunks as they arrive (64 KiB reads): after a drop, every byte received so far is kept.
            for chunk in response.iter_raw():
                sink.write(chunk)
                self._hasher.update(chunk)
                self._received += len(chunk)
                self._high_water = max(self._high_water, self._received)
                self._progress.update(self._received)
        except httpx.HTTPError as exc:
            raise broke_off(self.shown, self._received, exc) from None
        finally:
            response.close()
        expected = self.info.size if self.info else None
        if expected is not None and self._received < expected:
            if range_end is not None and self._received == range_end:
                return False
            raise SeedanceConnectionError(
                f"Download of {self.shown} ended early: got {self._received} of {expected} bytes."
            )
        if expected is not None and self._received > expected:
            raise SeedanceIntegrityError(
                f"Download of {self.shown} returned {self._received} bytes, more than the announced "
                f"{expected}; the file is not copied."
            )
        if expected is None and range_end is not None:  # pragma: no cover - _accept_partial refuses it
            raise SeedanceIntegrityError(
                f"Download of {self.shown} was resumed but its size was never announced; not copied."
            )
        return True

    def _request(self, offset: int, sink: DownloadSink | None = None) -> httpx.Response:
        """Send one GET from ``offset``; leave the response open on success and sort out resume vs restart."""
        ranged = offset > 0 and self._ranges and (self.info is None or self.info.accepts_ranges)
        continuing, self._continuing = self._continuing, False
        self._range_end = None
        response = self.send_get(offset if ranged else None)
        try:
            self._check_status(response)
            if response.status_code == 206:
                self._accept_partial(response, offset if ranged else 0, continuing=continuing)
            else:
                self._accept_full(response, offset, sink)
        except BaseException:
            response.close()
            raise
        return response

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 416:
            # Our idea of the file no longer matches the server's: start over without Range.
            self._ranges = False
            raise SeedanceConnectionError(
                f"Download of {self.shown}: the server refused the resume range (HTTP 416); restarting."
            )
        if status in (408, 429):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise SeedanceRateLimitError(
                f"Download of {self.shown} was throttled (HTTP {status}).",
                status_code=status,
                retry_after=retry_after,
            )
        if status >= 500:
            raise SeedanceServerError(
                f"Download of {self.shown} failed with HTTP {status}.",
                status_code=status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        hint = (
            " The link may have expired: RunComfy output URLs are not kept forever, copy outputs promptly."
            if status in (403, 404, 410)
            else ""
        )
        error = SeedanceTransferError(f"Download of {self.shown} failed with HTTP {status}.{hint}")
        error.http_status = status  # type: ignore[attr-defined]
        raise error

    def _accept_full(self, response: httpx.Response, offset: int, sink: DownloadSink | None) -> None:
        info = _source_info(self.url, response, size=_content_length(response))
        if info.size == 0:
            raise _empty_source(self.shown)
        media_type = info.content_type.partition(";")[0].strip().lower()
        if media_type in WEB_PAGE_MEDIA_TYPES:
            raise SeedanceTransferError(
                f"Download of {self.shown} answered with a web page (HTTP {response.status_code}, "
                f"Content-Type {media_type}), not a video: the link has likely expired or needs a sign-in. "
                f"Nothing was stored; RunComfy output URLs are not kept forever, copy outputs promptly."
            )
        if self.info is not None and offset > 0:
            # We asked for a range and got the whole file: restart from byte 0.
            self.log.warning(
                "%s does not resume downloads (answered 200 to a Range request); restarting from byte 0 "
                "after %s.",
                self.shown,
                human_bytes(offset),
            )
            self._restarts += 1
        self._rewind(sink)
        known = self.info.size if self.info is not None else None
        if known is not None and info.size is not None and known != info.size:
            raise SeedanceIntegrityError(
                f"{self.shown} changed while it was being copied (size {known} then {info.size})."
            )
        if known is not None and info.size is None:
            # The size learnt from an earlier answer still holds: an unsized restart must reach it.
            info = dataclasses.replace(info, size=known)
        self.info = info

    def _accept_partial(self, response: httpx.Response, offset: int, *, continuing: bool = False) -> None:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        total = int(match.group(3)) if match and match.group(3) != "*" else None
        known = self.info.size if self.info else None
        length = _content_length(response)
        if (
            self.info is None
            or match is None
            or int(match.group(1)) != offset
            or int(match.group(2)) < offset
            or (length is not None and length != int(match.group(2)) - offset + 1)
            or (known is not None and total is not None and total != known)
            or (known is None and total is None)
        ):
            # A range we did not ask for, for another version of the file, or (size never announced)
            # one whose end cannot be verified: do not splice it in.
            self._ranges = False
            raise SeedanceConnectionError(
                f"Download of {self.shown}: unusable partial answer "
                f"({response.headers.get('content-range')!r} for offset {offset}); restarting from byte 0."
            )
        if known is None:
            # The first total a Content-Range names is the size every later answer must add up to.
            self.info = dataclasses.replace(self.info, size=total)
            if self._progress is not None:
                self._progress.total = total
        self._range_end = int(match.group(2)) + 1
        if continuing:
            self.log.debug("Continuing the download of %s at byte %d.", self.shown, offset)
            return
        self._resumes += 1
        self.log.info("Resuming the download of %s at byte %d.", self.shown, offset)

    def _rewind(self, sink: DownloadSink | None) -> None:
        if self._received and sink is not None:
            sink.rewind()
        self._received = 0
        self._hasher = hashlib.sha256()
        if self._progress is not None:
            self._progress.restarted()


def _empty_source(shown: str) -> SeedanceIntegrityError:
    return SeedanceIntegrityError(
        f"Download of {shown} answered with an empty file (0 bytes), which is never a video: the link may "
        f"have expired. Nothing was stored."
    )


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        return None
    return size if size >= 0 else None


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """
    Parse ``bytes first-last/total`` into ``(first, last, total)`` (``total`` ``None`` for ``*``).

    :param value: the ``Content-Range`` header, if any.
    """
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), int(match.group(2)), None if total == "*" else int(total)


def _source_info(url: str, response: httpx.Response, *, size: int | None) -> SourceInfo:
    content_type = (response.headers.get("content-type") or "").strip() or DEFAULT_CONTENT_TYPE
    encoding = (response.headers.get("content-encoding") or "").strip().lower() or None
    etag = response.headers.get("etag")
    return SourceInfo(
        url=url,
        size=size,
        content_type=content_type,
        content_encoding=None if encoding == "identity" else encoding,
        # A weak ETag cannot be used in If-Range (RFC 9110 13.1.5).
        etag=etag if etag and not etag.startswith("W/") else None,
        last_modified=response.headers.get("last-modified"),
        accepts_ranges=response.headers.get("accept-ranges", "").strip().lower() != "none",
    )


__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "DEFAULT_DOWNLOAD_MAX_RESUMES",
    "DEFAULT_DOWNLOAD_MAX_RETRIES",
    "DEFAULT_DOWNLOAD_TIMEOUT_SECONDS",
    "DEFAULT_PART_SIZE",
    "MIN_PART_SIZE",
    "PROGRESS_LOG_INTERVAL_SECONDS",
    "PROGRESS_LOG_MIN_INTERVAL_SECONDS",
    "PROGRESS_LOG_PERCENT_STEP",
    "DownloadResult",
    "DownloadSink",
    "SourceInfo",
    "StreamingDownload",
    "TransferProgress",
    "check_source_url",
    "human_bytes",
    "new_download_client",
    "parse_content_range",
    "redact_url",
    "source_identity",
]
