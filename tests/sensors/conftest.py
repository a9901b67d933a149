"""Fixtures of the sensor tests: one emulator server per session, reset around every test."""

from __future__ import annotations

from tests.operators._dag_support import emulator, logs, shared_emulator

__all__ = ["emulator", "logs", "shared_emulator"]
