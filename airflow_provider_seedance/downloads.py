"""The one HTTP client for fetching public files (output videos, first-frame images), and the rules it keeps.

Every download the provider makes (the transfers' copies and the opt-in first-frame image check) goes
through :func:`new_download_client`, so one set of rules applies everywhere:

- **No credentials leave.** No ``Authorization``, ``Proxy-Authorization`` or ``Cookie`` header is ever
  sent, on the first request or on any redirect hop, and a URL with ``user:password@`` is refused (httpx
  would turn it into a Basic ``Authorization`` header). Environment proxies and ``.netrc`` are not used.
- **No cloud-metadata addresses.** A URL whose host is, or resolves to, a link-local address
  (``169.254.0.0/16``, ``fe80::/10``) or one of the other addresses where clouds serve instance metadata
  (:data:`METADATA_NETWORKS`: AWS's ``fd00:ec2::254``, Alibaba Cloud's ``100.100.100.200``, Volcengine's
  ``100.96.0.96``...), also written as an IPv4-mapped IPv6 address or as a decimal, octal or hex number, is
  refused, whatever the private-network setting. The check runs on every connection the client opens
  (each redirect hop included), on the address it actually connects to: the host name is resolved once and
  the socket connects to the address that was checked, so a DNS answer that changes between a check and
  the connection (DNS rebinding) cannot slip through. TLS still verifies the certificate for the host name.
- **Private networks on request.** Loopback is always allowed (local emulators and tests); other
  non-public addresses (``10/8``, ``172.16/12``, ``192.168/16``, ``100.64/10``, ``fc00::/7``...) are
  allowed unless the ``seedance`` connection's extra ``allow_private_networks`` is ``false`` (or the
  transfer operator's ``allow_private_networks=False``).

A refusal raises :class:`~airflow_provider_seedance.exceptions.SeedanceURLRefusedError` before any byte is
sent to the refused address, naming the host (never the query string) and the rule.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceURLRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_NETWORKS_EXTRA = "allow_private_networks"
"""The ``seedance`` connection extra that refuses private-network downloads when set to ``false``."""

METADATA_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local: AWS, Azure, Google Cloud, Oracle, Tencent, ECS...
    ipaddress.ip_network("fe80::/10"),  # link-local IPv6
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS instance metadata, IPv6
    ipaddress.ip_network("fd00:ec2::23/128"),  # AWS EKS Pod Identity agent (credentials), IPv6
    ipaddress.ip_network("fd20:ce::254/128"),  # Google Cloud metadata server, IPv6
    ipaddress.ip_network("fd00:42::42/128"),  # Scaleway metadata, IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud ECS metadata
    ipaddress.ip_network("100.96.0.96/32"),  # Volcengine / BytePlus ECS metadata
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud (Classic) metadata
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer (the VM agent's configuration and secrets)
)
"""Never fetched, whatever the private-network setting: clouds serve instance metadata, and the credentials of
the machine's role, at these addresses. Most are link-local; the others sit in ranges downloads otherwise
reach (``100.64/10`` and ``fc00::/7`` are private, allowed by default; ``192.0.0.192`` and Azure's
``168.63.129.16`` count as public)."""

DEFAULT_MAX_REDIRECTS = 10
"""Redirect hops a download follows before failing (each hop is checked like the first URL)."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")

METADATA_RULE = (
    "downloads never reach link-local addresses ("
    + ", ".join(str(network) for network in METADATA_NETWORKS if network.num_addresses > 1)
    + ") nor the other addresses where clouds serve instance metadata and its credentials ("
    + ", ".join(str(network.network_address) for network in METADATA_NETWORKS if network.num_addresses == 1)
    + ")"
)
PRIVATE_RULE = (
    "downloads from private networks are refused by this connection (its extra allow_private_networks is "
    "false, or the operator's allow_private_networks=False); only public addresses and loopback are allowed"
)
CREDENTIALS_RULE = (
    "a download URL must not carry user:password@ credentials (they would be sent as a Basic Authorization "
    "header); use a pre-signed URL instead"
)


def _show_url(url: str | httpx.URL) -> str:
    """
    Return ``scheme://host[:port]/path`` of ``url``: no credentials, no query string, no fragment.

    :param url: the URL to show in a message.
    """
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    suffix = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{suffix}"


def _literal_address(host: str) -> IPAddress | None:
    """
    Return the address a URL host names literally (``10.0.0.1``, ``[::1]``, ``2852039166``, ``0xa9.0xfe.0251.
    0376``), or ``None`` for a host name.

    Numeric forms that the C resolver (``inet_aton``) reads as IPv4 are decoded the same way here, so an
    encoded metadata address is recognised without a DNS query.

    :param host: the host part of a URL.
    """
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _address_refusal(address: IPAddress, *, allow_private_networks: bool = True) -> str | None:
    """
    Return the rule that forbids downloading from ``address``, or ``None`` when it is allowed.

    :param address: the address a URL names or resolves to.
    :param allow_private_networks: ``False`` refuses every non-public address except loopback.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    candidates: list[IPAddress] = [address, *_embedded_ipv4(address)]
    for candidate in candidates:
        if any(candidate in network for network in METADATA_NETWORKS):
            return METADATA_RULE
    if allow_private_networks or any(candidate.is_loopback for candidate in candidates):
        return None
    if not all(candidate.is_global for candidate in candidates):
        return PRIVATE_RULE
    return None


def url_refusal(url: str | httpx.URL, *, allow_private_networks: bool = True) -> str | None:
    """
    Return the rule a URL breaks before any lookup (credentials, a forbidden literal address), or ``None``.

    Host names are checked later, on the addresses they resolve to, by the client's transport.

    :param url: the URL to fetch.
    :param allow_private_networks: ``False`` also refuses literal private addresses.
    """
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
    except ValueError:
        return None  # httpx reports an unusable URL itself
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return CREDENTIALS_RULE
    address = _literal_address(host)
    if address is None:
        return None
    return _address_refusal(address, allow_private_networks=allow_private_networks)


def _refused(what: str, rule: str) -> SeedanceURLRefusedError:
    return SeedanceURLRefusedError(
        f"Refused to download from {what}: {rule}. Nothing was sent to it.",
        [{"field": "url", "rule": rule, "value": what}],
    )


def check_download_url(url: str | httpx.URL, *, allow_private_networks: bool = True) -> None:
    """
    Raise :class:`SeedanceURLRefusedError` when ``url`` breaks a rule visible without a DNS lookup.

    :param url: the URL to fetch.
    :param allow_private_networks: ``False`` also refuses literal private addresses.
    """
    rule = url_refusal(url, allow_private_networks=allow_private_networks)
    if rule is not None:
        raise _refused(_show_url(url), rule)


class _CheckedBackend(httpcore.NetworkBackend):
    """Resolve each host once, refuse forbidden addresses, connect to the address that was checked."""

    def __init__(self, *, allow_private_networks: bool) -> None:
        self.allow_private_networks = allow_private_networks
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        addresses: list[str] = []
        for _family, _type, _proto, _name, sockaddr in answers:
            text = str(sockaddr[0])
            address = ipaddress.ip_address(text.split("%", 1)[0])
            rule = _address_refusal(address, allow_private_networks=self.allow_private_networks)
            if rule is not None:
                shown = f"[{host}]" if ":" in host else host
                resolved = "" if _literal_address(host) == address else f" (it resolves to {address})"
                raise _refused(f"{shown}:{port}{resolved}", rule)
            if text not in addresses:
                addresses.append(text)
        error: httpcore.ConnectError | None = None
        for text in addresses:
            try:
                return self._backend.connect_tcp(
                    text, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"{host!r} resolves to no address")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("downloads never use Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool whose every connection goes through :class:`_CheckedBackend`."""

    def __init__(self, *, allow_private_networks: bool, limits: httpx.Limits) -> None:
        # trust_env only for the CA bundle (SSL_CERT_FILE / SSL_CERT_DIR), as httpx does by default.
        ssl_context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CheckedBackend(allow_private_networks=allow_private_networks),
        )


def _guard_hop(allow_private_networks: bool) -> Any:
    def guard(request: httpx.Request) -> None:
        # Runs for the first request and for every redirect hop, after httpx has applied URL credentials.
        check_download_url(request.url, allow_private_networks=allow_private_networks)
        for name in _SECRET_HEADERS:
            request.headers.pop(name, None)

    return guard


def new_download_client(
    *,
    timeout: float,
    allow_private_networks: bool = True,
    user_agent: str,
    headers: Mapping[str, str] | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    limits: httpx.Limits | None = None,
) -> httpx.Client:
    """
    Create the client every provider download uses: no credentials, no metadata address, redirects checked.

    :param timeout: seconds allowed to connect and between two reads.
    :param allow_private_networks: ``False`` refuses private-network addresses too (loopback stays allowed).
    :param user_agent: the ``User-Agent`` header.
    :param headers: more default headers (``Accept``...); credential headers are removed from every request.
    :param max_redirects: redirect hops followed.
    :param limits: connection pool limits (httpx's defaults when ``None``).
    """
    return httpx.Client(
        headers={"User-Agent": user_agent, "Accept": "*/*", **(headers or {})},
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        max_redirects=max_redirects,
        transport=_CheckedTransport(
            allow_private_networks=allow_private_networks, limits=limits or httpx.Limits()
        ),
        # No environment proxies (a proxy would resolve the host where this client cannot check it) and no
        # .netrc credentials.
        trust_env=False,
        event_hooks={"request": [_guard_hop(allow_private_networks)]},
    )


def connection_allows_private_networks(conn_id: str | None) -> bool:
    """
    Read the ``seedance`` connection's extra ``allow_private_networks`` (default ``True``).

    A missing connection allows them (a transfer of ``source_urls`` needs no ``seedance`` connection).

    :param conn_id: the ``seedance`` connection id.
    """
    if not conn_id:
        return True
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return True
    try:
        extra = conn.extra_dejson
    except Exception:  # a malformed extra is reported by the hook; never echo its content here
        extra = {}
    value = extra.get(ALLOW_PRIVATE_NETWORKS_EXTRA, True) if isinstance(extra, dict) else True
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: extra {ALLOW_PRIVATE_NETWORKS_EXTRA!r} must be true or false, "
            f"got {value!r}."
        )
    return value


__all__ = [
    "ALLOW_PRIVATE_NETWORKS_EXTRA",
    "DEFAULT_MAX_REDIRECTS",
    "METADATA_NETWORKS",
    "check_download_url",
    "connection_allows_private_networks",
    "new_download_client",
    "url_refusal",
]
