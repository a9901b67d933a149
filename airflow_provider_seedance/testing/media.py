"""The bodies of the emulator's output files: the bundled sample MP4 and generated MP4s of any size.

A generated body is a valid ISO-BMFF box sequence (an ``ftyp`` box, then one ``mdat`` box covering the rest
of the file) filled with a deterministic, position-dependent byte pattern. It is produced chunk by chunk from
one precomputed random block, so serving a multi-gigabyte file costs memory of one chunk and CPU of a memory
copy. No web imports here: the HTTP layer (``app.py``) only asks for byte ranges.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

SAMPLE_VIDEO_NAME = "sample.mp4"
"""File name of the bundled sample video (2 s, 160x90 H.264 with an AAC tone) in ``testing/assets``."""

CHUNK_SIZE = 128 * 1024
"""Bytes per chunk when streaming a body: small enough for thousands of parallel downloads."""

PATTERN_BLOCK_SIZE = 1 << 20
"""Size of the precomputed random block the generated pattern is derived from (a power of two)."""

PATTERN_SEED = 0x5EED_A9CE
"""Seed of the random block: every emulator, everywhere, generates the same bytes for the same size."""

MAX_GENERATED_SIZE = 1 << 40
"""Largest generated body (1 TiB): far above any benchmark, low enough to catch a unit mistake."""

_ASSETS_PACKAGE = __name__.rpartition(".")[0]
_FTYP_BOX = struct.pack(">I4s4sI4s4s4s4s", 32, b"ftyp", b"isom", 0x200, b"isom", b"iso2", b"avc1", b"mp41")
_MDAT_HEADER_SIZE = 8
_MAX_32BIT_BOX = 0xFFFFFFFF

MIN_GENERATED_SIZE = len(_FTYP_BOX) + _MDAT_HEADER_SIZE
"""Smallest generated body: an ``ftyp`` box and an empty ``mdat`` box (40 bytes)."""

# Odd multipliers so consecutive blocks land far apart in the base block and use different XOR keys.
_BLOCK_SHIFT_MULTIPLIER = 2_654_435_761
_BLOCK_KEY_MULTIPLIER = 167
_BLOCK_KEY_OFFSET = 91


@dataclass(frozen=True)
class ByteRange:
    """
    An inclusive byte range of a body, as HTTP ``Range``/``Content-Range`` express it.

    :param start: the first byte offset.
    :param end: the last byte offset (inclusive).
    """

    start: int
    end: int

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """
        Return the ``Content-Range`` header value of this range in a body of ``size`` bytes.

        :param size: the full body size.
        """
        return f"bytes {self.start}-{self.end}/{size}"


class RangeNotSatisfiableError(ValueError):
    """The ``Range`` header asks for bytes the body does not have (HTTP 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """
    Parse a single-range ``Range`` header; return ``None`` when the whole body should be sent.

    ``bytes=N-``, ``bytes=N-M`` and suffix ranges ``bytes=-N`` are honoured. Malformed headers and
    multi-range requests are ignored (RFC 9110 lets a server answer them with the full body). A start at or
    beyond the end of the body raises :class:`RangeNotSatisfiableError`.

    :param header: the ``Range`` header value, if any.
    :param size: the full body size.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(f"suffix range of {suffix} bytes in a body of {size} bytes")
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(f"range starts at byte {start} of a body of {size} bytes")
    return ByteRange(start, min(end, size - 1))


class VideoBody(ABC):
    """
    An output file the emulator serves: a size, an ``ETag`` and a way to stream any byte range of it.

    :param size: the body size in bytes.
    :param etag: the strong ``ETag`` (quoted) identifying these exact bytes.
    """

    def __init__(self, size: int, etag: str) -> None:
        self.size = size
        self.etag = etag

    def iter_range(self, start: int, end: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """
        Yield the bytes ``start..end-1`` in chunks of at most ``chunk_size`` bytes.

        :param start: the first byte offset.
        :param end: one past the last byte offset.
        :param chunk_size: the largest chunk to yield.
        """
        position = start
        while position < end:
            stop = min(end, position + chunk_size)
            yield self._slice(position, stop)
            position = stop

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        """
        Return the bytes ``start..end-1`` at once (for small bodies and tests; streaming uses ``iter_range``).

        :param start: the first byte offset.
        :param end: one past the last byte offset; ``None`` means the end of the body.
        """
        stop = self.size if end is None else min(end, self.size)
        return b"".join(self.iter_range(start, stop))

    @abstractmethod
    def _slice(self, start: int, stop: int) -> bytes:
        """Return the bytes ``start..stop-1`` (one chunk at most)."""


class SampleVideo(VideoBody):
    """
    The bundled sample MP4, held in memory (it is about 22 KB).

    :param data: the file's bytes.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(len(data), f'"sample-{hashlib.sha256(data).hexdigest()[:16]}"')
        self.data = data

    def _slice(self, start: int, stop: int) -> bytes:
        return self.data[start:stop]


class GeneratedVideo(VideoBody):
    """
    A deterministic MP4-shaped body of exactly ``size`` bytes, generated on the fly.

    :param size: the body size, from :data:`MIN_GENERATED_SIZE` to :data:`MAX_GENERATED_SIZE` bytes.
    """

    def __init__(self, size: int) -> None:
        if not MIN_GENERATED_SIZE <= size <= MAX_GENERATED_SIZE:
            raise ValueError(
                f"a generated video must be {MIN_GENERATED_SIZE} to {MAX_GENERATED_SIZE} bytes, got {size}"
            )
        super().__init__(size, f'"generated-{size}"')
        self.header = _FTYP_BOX + _mdat_header(size - len(_FTYP_BOX))

    def _slice(self, start: int, stop: int) -> bytes:
        parts: list[bytes] = []
        header_size = len(self.header)
        if start < header_size:
            parts.append(self.header[start : min(stop, header_size)])
            start = header_size
        while start < stop:
            block, offset = divmod(start, PATTERN_BLOCK_SIZE)
            count = min(stop - start, PATTERN_BLOCK_SIZE - offset)
            parts.append(_pattern(block, offset, count))
            start += count
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _mdat_header(box_size: int) -> bytes:
    if box_size <= _MAX_32BIT_BOX:
        return struct.pack(">I4s", box_size, b"mdat")
    # A box over 4 GiB announces size 1 and carries its real size (header included) as a 64-bit "largesize".
    return struct.pack(">I4sQ", 1, b"mdat", box_size)


@functools.lru_cache(maxsize=1)
def _base_block() -> bytes:
    return random.Random(PATTERN_SEED).randbytes(PATTERN_BLOCK_SIZE)


@functools.lru_cache(maxsize=1)
def _xor_tables() -> tuple[bytes, ...]:
    return tuple(bytes(value ^ key for value in range(256)) for key in range(256))


def _pattern(block: int, offset: int, count: int) -> bytes:
    # Byte p of block b is base[(p + shift(b)) mod B] XOR key(b): a rotation plus a byte-wide XOR, both done
    # by C-level slicing and bytes.translate, so the pattern never repeats within a file of realistic size.
    base = _base_block()
    shift = (block * _BLOCK_SHIFT_MULTIPLIER) & (PATTERN_BLOCK_SIZE - 1)
    key = (block * _BLOCK_KEY_MULTIPLIER + _BLOCK_KEY_OFFSET) & 0xFF
    first = (offset + shift) & (PATTERN_BLOCK_SIZE - 1)
    if first + count <= PATTERN_BLOCK_SIZE:
        raw = base[first : first + count]
    else:
        raw = base[first:] + base[: first + count - PATTERN_BLOCK_SIZE]
    return raw.translate(_xor_tables()[key])


@functools.lru_cache(maxsize=1)
def sample_video() -> SampleVideo:
    """Return the bundled sample MP4 (read from the package once)."""
    data = resources.files(_ASSETS_PACKAGE).joinpath("assets").joinpath(SAMPLE_VIDEO_NAME).read_bytes()
    return SampleVideo(data)


@functools.lru_cache(maxsize=64)
def generated_video(size: int) -> GeneratedVideo:
    """
    Return the generated body of ``size`` bytes (cached: benchmarks ask for the same few sizes).

    :param size: the body size in bytes.
    """
    return GeneratedVideo(size)


def video_for(size: int | None) -> VideoBody:
    """
    Return the body to serve: the sample MP4 when ``size`` is ``None``, else a generated body of that size.

    :param size: the planned ``video_size_bytes``.
    """
    return sample_video() if size is None else generated_video(size)


__all__ = [
    "CHUNK_SIZE",
    "MAX_GENERATED_SIZE",
    "MIN_GENERATED_SIZE",
    "ByteRange",
    "GeneratedVideo",
    "RangeNotSatisfiableError",
    "SampleVideo",
    "VideoBody",
    "generated_video",
    "parse_range",
    "sample_video",
    "video_for",
]
