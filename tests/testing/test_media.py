"""The emulator's output bodies: the sample MP4, generated MP4s of exact sizes, and Range parsing."""

from __future__ import annotations

import hashlib
import struct

import pytest

from airflow_provider_seedance.testing.media import (
    CHUNK_SIZE,
    MIN_GENERATED_SIZE,
    PATTERN_BLOCK_SIZE,
    ByteRange,
    GeneratedVideo,
    RangeNotSatisfiableError,
    parse_range,
    sample_video,
    video_for,
)


def boxes(data: bytes) -> list[tuple[bytes, int]]:
    """Return the top-level ISO-BMFF boxes (type, size) of ``data``, following 32- and 64-bit sizes."""
    found, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        found.append((kind, size))
        offset += size
    assert offset == len(data), "boxes do not add up to the file size"
    return found


def test_sample_is_a_small_valid_mp4() -> None:
    video = sample_video()
    data = video.read()
    assert len(data) == video.size < 50_000
    size, kind, brand = struct.unpack(">I4s4s", data[:12])
    assert (kind, brand) == (b"ftyp", b"isom")
    assert 16 <= size <= 64
    kinds = [kind for kind, _ in boxes(data)]
    assert kinds[0] == b"ftyp"
    assert {b"moov", b"mdat"} <= set(kinds)
    # moov before mdat: a player can start before the whole file arrived.
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    assert video.etag.startswith('"sample-')


@pytest.mark.parametrize("size", [MIN_GENERATED_SIZE, 41, 1000, CHUNK_SIZE + 7, PATTERN_BLOCK_SIZE * 2 + 3])
def test_generated_body_has_the_exact_size_and_valid_boxes(size: int) -> None:
    data = GeneratedVideo(size).read()
    assert len(data) == size
    assert boxes(data) == [(b"ftyp", 32), (b"mdat", size - 32)]
    assert data[8:12] == b"isom"


def test_generated_body_is_deterministic_and_position_dependent() -> None:
    size = PATTERN_BLOCK_SIZE * 3
    first, second = GeneratedVideo(size).read(), GeneratedVideo(size).read()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    # Each block of the pattern differs from the others: a copy that skips or repeats a block is caught.
    blocks = [first[i : i + PATTERN_BLOCK_SIZE] for i in range(0, size, PATTERN_BLOCK_SIZE)]
    assert len({hashlib.sha256(block).digest() for block in blocks}) == 3
    # A body of another size has the same bytes at the same offsets after the header.
    other = GeneratedVideo(size + 100).read(100, 5000)
    assert other == first[100:5000]


def test_any_range_matches_the_whole_body() -> None:
    video = GeneratedVideo(PATTERN_BLOCK_SIZE + 5000)
    whole = video.read()
    for start, end in [
        (0, 40),
        (30, 50),
        (PATTERN_BLOCK_SIZE - 10, PATTERN_BLOCK_SIZE + 10),
        (7, len(whole)),
    ]:
        assert video.read(start, end) == whole[start:end]
    chunks = list(video.iter_range(3, len(whole)))
    assert max(len(chunk) for chunk in chunks) == CHUNK_SIZE
    assert b"".join(chunks) == whole[3:]


def test_huge_generated_body_uses_a_64_bit_mdat_and_no_memory() -> None:
    size = 6 * 1024**3
    video = GeneratedVideo(size)
    header = video.read(0, 48)
    assert struct.unpack(">I4s", header[32:40]) == (1, b"mdat")
    assert struct.unpack(">Q", header[40:48]) == (size - 32,)
    tail = video.read(size - 10)
    assert len(tail) == 10


@pytest.mark.parametrize("size", [0, MIN_GENERATED_SIZE - 1, 2**41])
def test_generated_size_bounds(size: int) -> None:
    with pytest.raises(ValueError, match="generated video must be"):
        GeneratedVideo(size)


def test_video_for_picks_sample_or_generated() -> None:
    assert video_for(None) is sample_video()
    assert video_for(1234).size == 1234


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-", ByteRange(0, 99)),
        ("bytes=10-19", ByteRange(10, 19)),
        ("bytes=90-1000", ByteRange(90, 99)),
        ("bytes=-30", ByteRange(70, 99)),
        ("bytes=-300", ByteRange(0, 99)),
        ("BYTES = 5-5", ByteRange(5, 5)),
        ("bytes=0-1,5-6", None),
        ("items=0-5", None),
        ("bytes=abc", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 100)


def test_byte_range_headers() -> None:
    assert ByteRange(10, 19).length == 10
    assert ByteRange(10, 19).content_range(100) == "bytes 10-19/100"
