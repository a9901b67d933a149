"""Test helpers for the download address rules: a tripwire on outgoing connections and a scripted resolver.

Tests of refused addresses must send nothing to them: :func:`no_link_local_traffic` makes every socket
``connect`` to a non-loopback address fail at once and records it, and fails the test at teardown if any
was attempted. :func:`resolve_names` makes chosen host names resolve to chosen addresses (the system
resolver answers every other name), so a name can point at a link-local or private address without DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

Answer = str | list[str] | Callable[[], str | list[str]]


def _target_host(address: Any) -> str | None:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


@pytest.fixture
def no_link_local_traffic(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse and record every connection to a non-loopback address; fail the test if there was one."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def leaving(address: Any) -> bool:
        host = _target_host(address)
        if host is None:
            return False
        try:
            return not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        except ValueError:
            return True

    def connect(self: socket.socket, address: Any) -> None:
        if leaving(address):
            attempts.append(address)
            raise ConnectionRefusedError(f"test tripwire: no traffic may leave 127.0.0.1 (to {address!r})")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if leaving(address):
            attempts.append(address)
            return 111
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert attempts == [], f"connections were attempted to {attempts}"


def resolve_names(monkeypatch: pytest.MonkeyPatch, names: dict[str, Answer]) -> list[str]:
    """
    Make each host in ``names`` resolve to the given address(es); return the log of names looked up.

    A value may be a callable, called at every lookup (a DNS answer that changes: rebinding).

    :param monkeypatch: the test's monkeypatch.
    :param names: host name -> address, list of addresses, or a callable returning either.
    """
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        key = host.decode() if isinstance(host, bytes) else host
        if key not in names:
            return real(host, port, *args, **kwargs)
        lookups.append(key)
        answer = names[key]
        value = answer() if callable(answer) else answer
        addresses = [value] if isinstance(value, str) else value
        results = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (
                (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
            )
            results.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return results

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups
