"""Parallel ranged download: several connections, each fetching its own parts, for sources that honour Range.

A CDN often limits the rate of each connection; one stream is then as slow as that limit whatever the
bandwidth on both sides. When the source announces the file's size and does not refuse ranges, the file is
cut into the writer's parts and ``connections`` threads fetch them with ``Range: bytes=first-last``
requests (with ``If-Range``, so a file that changed is never spliced), each handing its finished parts to
the writer out of order (:meth:`PartSink.write_part`, uploaded by ``upload_concurrency`` threads).

* **Memory** is bounded by ``(connections + upload_concurrency) * part_size``: a part's buffer is taken
  from a fixed pool before its bytes are requested and returns to it once the part is uploaded and hashed.
  Buffers are claimed in part order, so the oldest unfinished part always holds one and the pool never
  deadlocks.
* **Verification**: the SHA-256 is computed over the parts in file order (a part that arrives early waits
  in its buffer), every answer's ``Content-Range`` must be exactly the requested range (a shorter one,
  from a server that caps ranges, is taken and the rest requested again) and its total the announced
  size; the byte count of every part is checked.
* **Resume**: a part whose connection breaks is requested again from the byte it stopped at, through the
  provider's retry policy (the budget is renewed whenever the part advanced, as for one stream).
* **Fallback**: when the source ignores ranges after all (answers 200, or a range other than the one
  asked), the parallel attempt stops, the writer is rewound and the file is copied as one stream by
  :class:`~._streaming.StreamingDownload`, with its own resume and restart rules.
* **No partial object**: this module only feeds the writer; the caller commits it after a complete,
  verified download, or aborts it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import httpx

from airflow_provider_seedance.exceptions import (
    SeedanceConnectionError,
    SeedanceIntegrityError,
)
from airflow_provider_seedance.hooks.retry import retrying
from airflow_provider_seedance.transfers._streaming import (
    DownloadResult,
    DownloadSink,
    Resume,
    SourceInfo,
    StreamingDownload,
    TransferProgress,
    broke_off,
    human_bytes,
    parse_content_range,
    resume_on_progress,
)

log = logging.getLogger(__name__)

DEFAULT_DOWNLOAD_CONNECTIONS = 3
"""Connections fetching parts of one file at once when the source honours ``Range`` (1: one stream)."""


class PartSink(DownloadSink, Protocol):
    """A download sink that also takes whole parts, in any order, from any thread."""

    part_size: int

    def write_part(self, number: int, data: bytearray | bytes) -> None:
        """
        Store part ``number``: ``part_size`` bytes from ``(number - 1) * part_size`` (fewer for the last).

        :param number: the part number, from 1.
        :param data: the part's bytes.
        """


def can_download_in_parallel(info: SourceInfo, part_size: int, connections: int) -> bool:
    """
    Say whether a file is fetched in parallel ranges: more than one part, a known size, ranges not refused.

    :param info: what the source announced.
    :param part_size: the writer's part size.
    :param connections: the connections allowed.
    """
    return connections > 1 and info.size is not None and info.size > part_size and info.accepts_ranges


class _RangesNotHonoured(Exception):
    """The source answered a range request with something else: copy the file as one stream instead."""


class _Stopped(Exception):
    """Another part failed (or the task is stopping): this worker gives up its part quietly."""


@dataclass
class _Part:
    """One part being fetched: where it lies in the file, its buffer and how much of it has arrived."""

    number: int
    start: int
    length: int
    buffer: bytearray
    got: int = 0


class RangedDownload:
    """
    Copy one URL into a :class:`PartSink`, in parallel ranges when the source allows it, else as one stream.

    :param download: the download of the file (its client, URL, retry policy and first answer are reused).
    :param connections: connections fetching parts at once (1: always one stream).
    :param upload_concurrency: parts handed to the writer at once.
    """

    def __init__(self, download: StreamingDownload, *, connections: int, upload_concurrency: int) -> None:
        self.download = download
        self.connections = max(1, int(connections))
        self.upload_concurrency = max(1, int(upload_concurrency))
        self.log = download.log
        self._lock = threading.Condition()
        self._hash_lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._free: list[bytearray] = []
        self._allocated = 0
        self._max_buffers = 0
        self._next_part = 1
        self._parts = 0
        self._size = 0
        self._part_size = 0
        self._next_hash = 1
        self._ready: dict[int, _Part] = {}
        self._holders: dict[int, int] = {}
        self._hasher = hashlib.sha256()
        self._received = 0
        self._resumes = 0
        self._progress: TransferProgress | None = None
        self._uploads: list[Future[None]] = []

    def copy_to(self, sink: PartSink) -> DownloadResult:
        """
        Stream the whole file into ``sink`` and return the verified result; the caller commits or aborts it.

        :param sink: where the parts go.
        """
        info = self.download.open()
        if not can_download_in_parallel(info, sink.part_size, self.connections):
            return self.download.copy_to(sink)
        # Every part is fetched with its own range: the first answer's body is not read.
        self.download.close()
        sink.begin(info)
        try:
            return self._parallel(info, sink)
        except _RangesNotHonoured as refused:
            self.log.warning(
                "%s does not honour range requests (%s); copying it as one stream instead.",
                self.download.shown,
                refused,
            )
            sink.rewind()
            return self.download.copy_to(sink)

    # -- the parallel copy -----------------------------------------------------------------------------------

    def _parallel(self, info: SourceInfo, sink: PartSink) -> DownloadResult:
        assert info.size is not None
        self._size = info.size
        self._part_size = sink.part_size
        self._parts = -(-self._size // self._part_size)
        connections = min(self.connections, self._parts)
        self._max_buffers = connections + self.upload_concurrency
        self._progress = TransferProgress(self.download.label, self._size, self.log)
        self.log.info(
            "Downloading %s over %d connections (%d parts of %s).",
            self.download.shown,
            connections,
            self._parts,
            human_bytes(self._part_size),
        )
        downloads = ThreadPoolExecutor(connections, thread_name_prefix="seedance-get")
        uploads = ThreadPoolExecutor(self.upload_concurrency, thread_name_prefix="seedance-put")
        workers = [downloads.submit(self._worker, sink, uploads) for _ in range(connections)]
        try:
            for worker in workers:
                worker.result()
        except BaseException as exc:  # a kill signal in this thread: stop every worker first
            self._fail(exc)
            raise
        finally:
            downloads.shutdown(wait=True)
            for upload in list(self._uploads):
                try:
                    upload.result()
                except BaseException as exc:
                    self._fail(exc)
            uploads.shutdown(wait=True)
            self._free.clear()
        if self._error is not None:
            raise self._error
        if self._next_hash != self._parts + 1 or self._received != self._size:
            raise SeedanceIntegrityError(
                f"Download of {self.download.shown}: {self._received} of {self._size} bytes arrived in "
                f"{self._next_hash - 1} of {self._parts} parts; the file is not copied."
            )
        return DownloadResult(
            url=self.download.url,
            size=self._size,
            sha256=self._hasher.hexdigest(),
            content_type=info.content_type,
            content_encoding=info.content_encoding,
            seconds=self._progress.finished(),
            resumes=self._resumes,
        )

    def _fail(self, exc: BaseException) -> None:
        """Keep the first error and stop every worker (later errors are consequences of the first)."""
        with self._lock:
            if self._error is None and not isinstance(exc, _Stopped):
                self._error = exc
            self._stop.set()
            self._lock.notify_all()

    def _worker(self, sink: PartSink, uploads: ThreadPoolExecutor) -> None:
        try:
            while True:
                part = self._claim()
                if part is None:
                    return
                self._fetch(part)
                self._finished(part, sink, uploads)
        except BaseException as exc:
            self._fail(exc)

    def _claim(self) -> _Part | None:
        """Take a free buffer and the next part number together (so buffers are held in part order)."""
        with self._lock:
            while True:
                if self._stop.is_set() or self._next_part > self._parts:
                    return None
                if self._free or self._allocated < self._max_buffers:
                    break
                self._lock.wait()
            if self._free:
                buffer = self._free.pop()
            else:
                buffer = bytearray(self._part_size)
                self._allocated += 1
            number = self._next_part
            self._next_part += 1
            self._holders[number] = 2  # released once uploaded and once hashed
        start = (number - 1) * self._part_size
        return _Part(number, start, min(self._part_size, self._size - start), buffer)

    def _release(self, part: _Part) -> None:
        with self._lock:
            self._holders[part.number] -= 1
            if self._holders[part.number] == 0:
                del self._holders[part.number]
                self._free.append(part.buffer)
                self._lock.notify_all()

    def _finished(self, part: _Part, sink: PartSink, uploads: ThreadPoolExecutor) -> None:
        """Hand a complete part to the writer and to the hash (in file order)."""
        body = part.buffer if part.length == len(part.buffer) else bytes(part.buffer[: part.length])
        self._uploads.append(uploads.submit(self._upload, sink, part, body))
        with self._hash_lock:
            self._ready[part.number] = part
            while self._next_hash in self._ready:
                ready = self._ready.pop(self._next_hash)
                self._hasher.update(memoryview(ready.buffer)[: ready.length])
                self._next_hash += 1
                self._release(ready)

    def _upload(self, sink: PartSink, part: _Part, body: bytearray | bytes) -> None:
        try:
            if not self._stop.is_set():
                sink.write_part(part.number, body)
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            self._release(part)

    # -- one part ------------------------------------------------------------------------------------------

    def _fetch(self, part: _Part) -> None:
        """Fetch one part, resuming it after transient failures (the budget renewed on progress)."""
        download = self.download
        while True:
            try:
                for attempt in retrying(
                    f"download of {download.shown} (part {part.number})", download.max_retries, download.wait
                ):
                    with attempt, resume_on_progress(lambda: part.got):
                        self._read_range(part)
                return
            except Resume as interrupted:
                with self._lock:
                    self._resumes += 1
                self.log.warning(
                    "Part %d of %s interrupted after %s (%s); resuming",
                    part.number,
                    download.shown,
                    human_bytes(part.got),
                    interrupted.cause,
                )

    def _read_range(self, part: _Part) -> None:
        """Request the rest of ``part`` until it is complete (a capped answer is followed by another one)."""
        download = self.download
        while part.got < part.length:
            first = part.start + part.got
            last = part.start + part.length - 1
            response = download.send_get(first, last)
            try:
                end = self._accept(response, first, last) - part.start
                self._receive(response, part, end)
            finally:
                response.close()

    def _accept(self, response: httpx.Response, first: int, last: int) -> int:
        """Check the answer to ``bytes=first-last``; return the end (exclusive) of the bytes it carries."""
        status = response.status_code
        if status in (200, 416):
            raise _RangesNotHonoured(f"HTTP {status} to a request for bytes {first}-{last}")
        self.download.check_response(response)
        if status != 206:
            raise _RangesNotHonoured(f"HTTP {status} to a request for bytes {first}-{last}")
        header = response.headers.get("content-range")
        parsed = parse_content_range(header)
        if parsed is None or parsed[0] != first or not first <= parsed[1] <= last:
            raise _RangesNotHonoured(f"Content-Range {header!r} for bytes {first}-{last}")
        if parsed[2] is not None and parsed[2] != self._size:
            raise SeedanceIntegrityError(
                f"{self.download.shown} changed while it was being copied (size {self._size} then "
                f"{parsed[2]})."
            )
        return parsed[1] + 1

    def _receive(self, response: httpx.Response, part: _Part, end: int) -> None:
        """Copy the answer's body into the part's buffer, up to ``end`` (offset within the part)."""
        assert self._progress is not None
        try:
            for chunk in response.iter_raw():
                if self._stop.is_set():
                    raise _Stopped
                count = len(chunk)
                if part.got + count > end:
                    raise SeedanceIntegrityError(
                        f"Download of {self.download.shown} returned more bytes than the range it announced; "
                        "the file is not copied."
                    )
                part.buffer[part.got : part.got + count] = chunk
                part.got += count
                with self._lock:
                    self._received += count
                    self._progress.update(self._received)
        except httpx.HTTPError as exc:
            raise broke_off(f"{self.download.shown} (part {part.number})", part.got, exc) from None
        if part.got < end:
            raise SeedanceConnectionError(
                f"Download of {self.download.shown} (part {part.number}) ended early: got {part.got} of "
                f"{end} bytes."
            )


__all__ = [
    "DEFAULT_DOWNLOAD_CONNECTIONS",
    "PartSink",
    "RangedDownload",
    "can_download_in_parallel",
]
