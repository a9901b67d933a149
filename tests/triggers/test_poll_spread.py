"""Polls of requests submitted together are spread over the poll interval instead of hitting in lockstep."""

from __future__ import annotations

import asyncio
import time
import types
import uuid

import pytest

from airflow_provider_seedance import lifecycle
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.lifecycle import next_sleep, poll_phase
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from airflow_provider_seedance.triggers.seedance import SeedanceRequestTrigger
from tests._support import conn_json

PAYLOAD = {"prompt": "A kite over the dunes", "first_frame_image_url": "https://example.com/kite.png"}


def request_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def test_phases_are_fixed_per_request_and_spread_evenly() -> None:
    ids = request_ids(1000)
    assert [poll_phase(rid, 5.0) for rid in ids] == [poll_phase(rid, 5.0) for rid in ids]
    bins = [0] * 10
    for rid in ids:
        phase = poll_phase(rid, 5.0)
        assert 0.0 <= phase < 5.0
        bins[int(phase / 0.5)] += 1
    # 100 expected per bin; lockstep would put all 1,000 in one.
    assert max(bins) < 150, bins
    assert min(bins) > 50, bins


def test_next_sleep_lands_on_the_request_slot_and_never_exceeds_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = types.SimpleNamespace(time=lambda: 0.0)
    monkeypatch.setattr(lifecycle, "time", clock)
    for rid in request_ids(50):
        phase = poll_phase(rid, 5.0)
        for now in (1_800_000_000.0, 1_800_000_000.0 + phase, 1_800_000_003.3, 1_800_000_004.999):
            clock.time = lambda now=now: now
            wait = next_sleep(5.0, None, rid)
            assert 0.0 < wait <= 5.0
            # The poll after the wait falls on the request's own slot of the wall clock.
            assert (now + wait - phase) % 5.0 == pytest.approx(0.0, abs=1e-6) or (
                now + wait - phase
            ) % 5.0 == pytest.approx(5.0, abs=1e-6)
            # A deadline still shortens the wait, and nothing waits past it.
            assert next_sleep(5.0, now + 0.25, rid) == pytest.approx(min(wait, 0.25))
            assert next_sleep(5.0, now - 1, rid) == 0.0
    # Without a request id, the plain interval.
    assert next_sleep(5.0, None) == 5.0


async def test_triggers_started_together_do_not_poll_in_lockstep(
    emulator: SeedanceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll, count = 1.0, 24
    monkeypatch.setenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", conn_json(emulator))
    emulator.set_plan(JobPlan(queue_seconds=1.0, run_seconds=3.5))
    hook = SeedanceHook()
    try:
        ids = [hook.submit(SEEDANCE_1_5_PRO_I2V_MODEL_ID, PAYLOAD).request_id for _ in range(count)]
    finally:
        hook.close()
    deadline = time.time() + 60
    triggers = [SeedanceRequestTrigger(rid, poll_interval=poll, end_time=deadline) for rid in ids]
    # All at once, as a mapped fan-out deferring in the same second or a triggerer restart.
    events = await asyncio.wait_for(
        asyncio.gather(*(trigger.run().__anext__() for trigger in triggers)), timeout=60
    )
    assert {event.payload["status"] for event in events} == {"succeeded"}

    later: list[float] = []  # every status GET but each request's first
    seen: set[str] = set()
    for call in emulator.requests("status"):
        if call.request_id in seen:
            later.append(call.timestamp % poll)
        seen.add(call.request_id or "")
    assert len(later) >= 2 * count
    # Share of those polls inside the busiest quarter of the interval: ~100% in lockstep, ~25% when spread.
    window = poll / 4
    busiest = max(
        sum(1 for at in later if (at - start) % poll < window) for start in [i * poll / 40 for i in range(40)]
    )
    assert busiest / len(later) < 0.6, (busiest, len(later))
