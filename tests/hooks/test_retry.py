"""The retry module's Retry-After parser: one reading of the header for the hook, image checks and downloads."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_seedance.hooks.retry import parse_retry_after

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Fri, 04 Dec 2026 12:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 12:01:00 +0000", 60.0),
        # A zone-less date ("-0000") is UTC: before, the hook raised TypeError subtracting it from an aware now.
        ("Fri, 04 Dec 2026 12:00:10 -0000", 10.0),
        ("Fri, 04 Dec 2026 11:00:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_delta_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "-inf", "1e999", "Fri, 99 Foo 2026"])
def test_unusable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_defaults_to_the_clock() -> None:
    later = datetime.now(timezone.utc).timestamp() + 3600
    text = datetime.fromtimestamp(later, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 3590 <= (parse_retry_after(text) or 0) <= 3600
