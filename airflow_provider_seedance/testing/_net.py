"""Networking helpers of the emulator, its console script and the local Airflow (standard library only)."""

from __future__ import annotations

import ipaddress
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """
    Return a TCP port that is free on ``host`` right now (bind to port 0 and let the OS choose).

    :param host: the interface the port will be bound on.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback(host: str | None) -> bool:
    """
    Say whether ``host`` names this machine only: ``localhost`` or a loopback IP address.

    :param host: a host name or IP address (``None``: unknown, so not loopback).
    """
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["free_port", "is_loopback"]
