"""The download client: no credentials, no link-local or cloud-metadata address (any hop), private on request.

Every test talks to 127.0.0.1 only. Refused addresses are reached through literal URLs or a scripted
resolver, under a tripwire that fails the test if any connection leaves loopback: a refusal must happen
before connecting.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import httpx
import pytest

from airflow_provider_seedance.downloads import (
    _address_refusal,
    _literal_address,
    _show_url,
    check_download_url,
    connection_allows_private_networks,
    new_download_client,
    url_refusal,
)
from airflow_provider_seedance.exceptions import SeedanceConfigurationError, SeedanceURLRefusedError
from tests.network_guard import no_link_local_traffic, resolve_names
from tests.transfers._support import FileServer, file_server

__all__ = ["file_server", "no_link_local_traffic"]

BODY = b"x" * 4096


def client(**kwargs: Any) -> httpx.Client:
    kwargs.setdefault("timeout", 5.0)
    return new_download_client(user_agent="test", **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The address rules
# ---------------------------------------------------------------------------------------------------------

LINK_LOCAL = [
    "169.254.169.254",
    "169.254.0.1",
    "169.254.255.255",
    "fe80::1",
    "febf::1",
    "fe80::1%2",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "::169.254.169.254",
]
# Instance metadata outside the link-local ranges, inside ranges that are otherwise private (allowed by
# default): each hands out the machine's role credentials to whoever asks from the machine.
CLOUD_METADATA = [
    "fd00:ec2::254",  # AWS IMDS, IPv6
    "fd00:ec2::23",  # AWS EKS Pod Identity agent, IPv6
    "fd20:ce::254",  # Google Cloud, IPv6
    "fd00:42::42",  # Scaleway, IPv6
    "100.100.100.200",  # Alibaba Cloud
    "100.96.0.96",  # Volcengine / BytePlus (where ByteDance's own cloud runs workers)
    "192.0.0.192",  # Oracle Cloud Classic
    "168.63.129.16",  # Azure WireServer
    "::ffff:100.100.100.200",
    "::ffff:6460:60",  # 100.96.0.96, IPv4-mapped in hex
    "64:ff9b::6464:64c8",  # 100.100.100.200 through NAT64
    "2002:6460:60::1",  # 100.96.0.96 in 6to4
]
PRIVATE = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.201",  # next to Alibaba Cloud's metadata address: only that one address is refused
    "100.96.0.97",
    "fd00:ec2::253",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:10.0.0.1",
]
LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]
PUBLIC = ["93.184.216.34", "2606:4700::1111", "169.253.255.255", "169.255.0.0", "fec0::1"]


@pytest.mark.parametrize("address", LINK_LOCAL + CLOUD_METADATA)
@pytest.mark.parametrize("allow_private_networks", [True, False])
def test_link_local_and_cloud_metadata_are_always_refused(address: str, allow_private_networks: bool) -> None:
    rule = _address_refusal(ipaddress.ip_address(address), allow_private_networks=allow_private_networks)
    assert rule is not None
    assert "link-local" in rule
    assert "instance metadata" in rule


@pytest.mark.parametrize("address", PRIVATE)
def test_private_networks_are_allowed_unless_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert _address_refusal(ip) is None
    rule = _address_refusal(ip, allow_private_networks=False)
    assert rule is not None
    assert "private networks" in rule


@pytest.mark.parametrize("address", LOOPBACK + PUBLIC)
@pytest.mark.parametrize("allow_private_networks", [True, False])
def test_loopback_and_public_are_allowed(address: str, allow_private_networks: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert _address_refusal(ip, allow_private_networks=allow_private_networks) is None


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "2852039166",  # decimal
        "0xa9fea9fe",  # hex
        "0XA9FEA9FE",
        "0251.0376.0251.0376",  # octal
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",  # a.b.c16
        "169.16689662",  # a.b24
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
    ],
)
def test_encodings_of_the_metadata_address_are_recognised(host: str) -> None:
    assert _literal_address(host) in (
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("::ffff:169.254.169.254"),
    )
    rule = url_refusal(f"http://{host}/latest/meta-data/")
    assert rule is not None
    assert "link-local" in rule


@pytest.mark.parametrize("host", ["example.com", "cdn-1.example.com", "deadbeef", "a.b.c.d.e", "0x.example"])
def test_names_are_not_literal_addresses(host: str) -> None:
    assert _literal_address(host) is None
    assert url_refusal(f"https://{host}/clip.mp4") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1/clip.mp4",
        "http://user@127.0.0.1/clip.mp4",
        "http://:pw@127.0.0.1/",
        "http://@127.0.0.1/",
    ],
)
def test_urls_with_credentials_are_refused(url: str) -> None:
    with pytest.raises(SeedanceURLRefusedError, match="user:password@") as info:
        check_download_url(url)
    assert "pw" not in str(info.value)


def test_messages_name_the_host_not_the_query() -> None:
    with pytest.raises(SeedanceURLRefusedError) as info:
        check_download_url("http://169.254.169.254:80/latest/meta-data/?X-Amz-Signature=secret")
    message = str(info.value)
    assert "http://169.254.169.254:80/latest/meta-data/?..." in message
    assert "secret" not in message
    assert "link-local" in message
    assert _show_url("https://u:p@[fe80::1]:8443/a?b=c#d") == "https://[fe80::1]:8443/a?..."


# ---------------------------------------------------------------------------------------------------------
# The client: every hop, every resolved address, the address actually connected to
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://100.100.100.200/latest/meta-data/ram/security-credentials/",
        "http://1684301000/latest/meta-data/",  # 100.100.100.200 as one decimal number
        "http://100.96.0.96/latest/iam/security_credentials/",
        "http://[fd20:ce::254]/computeMetadata/v1/",
    ],
)
def test_client_refuses_literal_link_local_without_connecting(
    no_link_local_traffic: list[Any], url: str
) -> None:
    with client() as http, pytest.raises(SeedanceURLRefusedError, match="link-local"):
        http.get(url)


def test_client_refuses_names_resolving_to_link_local(
    no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = resolve_names(monkeypatch, {"metadata.test": ["127.0.0.1", "169.254.169.254"]})
    # One forbidden address among the answers is enough: the connection could land on it.
    with client() as http, pytest.raises(SeedanceURLRefusedError) as info:
        http.get("http://metadata.test:8080/latest/meta-data/?token=secret")
    message = str(info.value)
    assert "metadata.test:8080" in message
    assert "169.254.169.254" in message
    assert "link-local" in message
    assert "secret" not in message
    assert lookups == ["metadata.test"]


def test_a_name_for_a_cloud_metadata_service_is_refused_with_private_networks_allowed(
    no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Private networks are allowed by default (an in-house CDN), but Volcengine's metadata service sits in
    # 100.64/10: a name pointing there must still be refused, before any byte is sent.
    resolve_names(monkeypatch, {"cdn.internal.test": "100.96.0.96"})
    with client(allow_private_networks=True) as http, pytest.raises(SeedanceURLRefusedError) as info:
        http.get("http://cdn.internal.test/latest/iam/security_credentials/role")
    message = str(info.value)
    assert "100.96.0.96" in message
    assert "instance metadata" in message


def test_client_connects_to_the_address_it_checked(
    file_server: FileServer, no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name first answers loopback, then the metadata address. A client that checks one
    # answer and connects with another lookup would land on 169.254.169.254 (the tripwire would fail).
    answers = itertools.cycle(["127.0.0.1", "169.254.169.254"])
    lookups = resolve_names(monkeypatch, {"rebind.test": lambda: next(answers)})
    port = file_server.base_url.rsplit(":", 1)[1]
    file_server.add("/clip.mp4", BODY)
    with client() as http:
        answer = http.get(f"http://rebind.test:{port}/clip.mp4")
    assert answer.content == BODY
    assert lookups == ["rebind.test"]  # resolved once, connected to that very answer
    assert file_server.requests_for("/clip.mp4")[0].headers["host"] == f"rebind.test:{port}"
    # The next connection resolves again, gets the metadata address, and is refused before connecting.
    with client() as http, pytest.raises(SeedanceURLRefusedError, match=r"169\.254\.169\.254"):
        http.get(f"http://rebind.test:{port}/clip.mp4")


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://0xa9fea9fe/latest/",
        "http://metadata.test/latest/",
    ],
)
def test_every_redirect_hop_is_checked(
    file_server: FileServer, no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    resolve_names(monkeypatch, {"metadata.test": "169.254.169.254"})
    url = file_server.add("/hop", b"", redirect=location)
    with client() as http, pytest.raises(SeedanceURLRefusedError, match="link-local"):
        http.get(url)
    assert len(file_server.requests_for("/hop")) == 1


def test_no_credentials_on_any_hop(file_server: FileServer) -> None:
    file_server.add("/clip.mp4", BODY)
    hop = file_server.add("/hop", b"", redirect="/clip.mp4")
    with client() as http:
        http.cookies.set("session", "s3cr3t")
        answer = http.get(hop, headers={"Authorization": "Bearer s3cr3t", "Proxy-Authorization": "Basic x"})
    assert answer.content == BODY
    for seen in file_server.seen:
        assert "authorization" not in seen.headers
        assert "proxy-authorization" not in seen.headers
        assert "cookie" not in seen.headers


def test_redirect_to_a_url_with_credentials_is_refused(file_server: FileServer) -> None:
    file_server.add("/clip.mp4", BODY)
    hop = file_server.add("/hop", b"", redirect=f"http://user:s3cr3t@{file_server.base_url[7:]}/clip.mp4")
    with client() as http, pytest.raises(SeedanceURLRefusedError, match="user:password@") as info:
        http.get(hop)
    assert "s3cr3t" not in str(info.value)
    assert file_server.requests_for("/clip.mp4") == []


def test_private_networks_refused_on_request(
    file_server: FileServer, no_link_local_traffic: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_names(monkeypatch, {"intranet.test": "10.1.2.3", "nas.test": "fd12::7"})
    with client(allow_private_networks=False) as http:
        for url in ("http://intranet.test/clip.mp4", "http://nas.test/clip.mp4", "http://192.168.0.10/"):
            with pytest.raises(SeedanceURLRefusedError, match="private networks"):
                http.get(url)
        # Loopback stays allowed.
        assert http.get(file_server.add("/clip.mp4", BODY)).content == BODY


# ---------------------------------------------------------------------------------------------------------
# The connection setting
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, True),
        ({"allow_private_networks": False}, False),
        ({"allow_private_networks": "false"}, False),
        ({"allow_private_networks": True}, True),
        ({"allow_private_networks": "TRUE"}, True),
    ],
)
def test_connection_extra(monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], expected: bool) -> None:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_NET",
        json.dumps({"conn_type": "seedance", "password": "t", "extra": extra}),
    )
    assert connection_allows_private_networks("seedance_net") is expected


def test_connection_extra_must_be_a_bool(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_SEEDANCE_NET",
        json.dumps({"conn_type": "seedance", "password": "t", "extra": {"allow_private_networks": "no"}}),
    )
    with pytest.raises(SeedanceConfigurationError, match="allow_private_networks"):
        connection_allows_private_networks("seedance_net")


def test_missing_connection_allows_private_networks() -> None:
    assert connection_allows_private_networks("no_such_seedance_connection") is True
    assert connection_allows_private_networks(None) is True
