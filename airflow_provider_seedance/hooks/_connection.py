"""The ``seedance`` connection: read, checked and resolved into the settings every API call uses."""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from airflow_provider_seedance.exceptions import SeedanceConfigurationError
from airflow_provider_seedance.get_provider_info import DEFAULT_BASE_URL
from airflow_provider_seedance.hooks.retry import (
    RETRY_JITTER_SECONDS,
    RETRY_WAIT_INITIAL_SECONDS,
    BackoffWait,
)

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 5


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
"""Proxy URL schemes httpx speaks (the SOCKS ones need ``httpx[socks]``)."""

TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]+$")
"""What a bearer token may hold: visible ASCII. h11 refuses control characters in a header (and quotes the
whole header in its error), httpx refuses non-ASCII, and no RunComfy token has a space."""


_TOKEN_EXPOSURE_WARNED: set[str] = set()
"""Connection settings already warned about in this process (one line, not one per trigger of a fan-in)."""


def token_exposure_warning(config: SeedanceConnectionConfig, conn_id: str) -> str | None:
    """
    Return a warning, once per process and connection setting, when the token could be read on the network.

    ``http://`` and ``verify: false`` stay allowed (an emulator in a container, a test endpoint with a
    self-signed certificate), but outside the loopback interface anyone on the path can read the bearer
    token of every call: in clear text, or by impersonating an API whose certificate is not checked.

    :param config: the resolved connection.
    :param conn_id: its id, for the message.
    """
    url = httpx.URL(config.base_url)
    if _is_loopback(url.host):
        return None
    if url.scheme == "http":
        problem = "sends the API token unencrypted (http://)"
        advice = "Use https://"
    elif not config.verify:
        problem = "does not verify the TLS certificate (extra verify: false) when it sends the API token"
        advice = "Set ca_bundle to the endpoint's CA instead of verify: false"
    else:
        return None
    key = f"{url.scheme}:{config.verify}:{config.base_url}"
    if key in _TOKEN_EXPOSURE_WARNED:
        return None
    _TOKEN_EXPOSURE_WARNED.add(key)
    return (
        f"Connection {conn_id!r} {problem} to {redact_url(config.base_url)}: anyone on the network path can "
        f"read it. {advice} unless this is an emulator on a network you trust."
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SeedanceConnectionConfig:
    """
    Everything needed to call the API, resolved from an Airflow connection.

    :param base_url: scheme + host (+ optional port and path prefix), no trailing slash.
    :param token: the bearer token; kept out of ``repr()``.
    :param timeout: seconds allowed per HTTP call.
    :param max_retries: retries of idempotent calls.
    :param retry_backoff: the first backoff delay in seconds (doubled per attempt, plus jitter).
    :param verify: verify the API's TLS certificate (``False`` only for a test endpoint).
    :param ca_bundle: a PEM file (or OpenSSL hashed directory) of CA certificates to trust instead of the
        default store, for a private CA or a TLS-inspecting proxy.
    :param proxy: the proxy URL for API calls; may hold credentials, so it is kept out of ``repr()`` and
        shown only through :attr:`proxy_display`.
    """

    base_url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = RETRY_WAIT_INITIAL_SECONDS
    verify: bool = True
    ca_bundle: str | None = None
    proxy: str | None = field(default=None, repr=False)

    def backoff(self) -> BackoffWait:
        """The wait policy for retried calls."""
        return BackoffWait(initial=self.retry_backoff, jitter=min(RETRY_JITTER_SECONDS, self.retry_backoff))

    @property
    def client_key(self) -> tuple[Any, ...]:
        """Identify clients that may be shared: same URL, token (hashed), timeout, TLS and proxy settings."""
        proxy = hashlib.sha256(self.proxy.encode()).hexdigest() if self.proxy else None
        return (
            self.base_url,
            hashlib.sha256(self.token.encode()).hexdigest(),
            self.timeout,
            self.verify,
            self.ca_bundle,
            proxy,
        )

    @property
    def proxy_display(self) -> str | None:
        """The proxy URL with its password replaced by ``***``, for logs and messages."""
        return None if self.proxy is None else redact_url(self.proxy)

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str) -> SeedanceConnectionConfig:
        """
        Build the config from an Airflow ``Connection``.

        :param conn: the connection object.
        :param conn_id: its id, for error messages.
        """
        token = check_token((conn.password or "").strip(), conn_id)
        extra = _extra_dict(conn, conn_id)
        return cls(
            base_url=normalize_base_url(
                conn.host, getattr(conn, "port", None), getattr(conn, "schema", None)
            ),
            token=token,
            timeout=_positive_number(extra.get("timeout", DEFAULT_TIMEOUT_SECONDS), "timeout", conn_id),
            max_retries=int(
                _positive_number(
                    extra.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries", conn_id, allow_zero=True
                )
            ),
            retry_backoff=_positive_number(
                extra.get("retry_backoff", RETRY_WAIT_INITIAL_SECONDS),
                "retry_backoff",
                conn_id,
                allow_zero=True,
            ),
            **_network_settings(extra, conn_id),
        )


def check_token(token: str, conn_id: str) -> str:
    """
    Return ``token`` when it can be sent as ``Authorization: Bearer <token>``; else raise, never quoting it.

    Checked when the connection is read, before any HTTP call: a token with a line break (a bad paste, a
    secrets backend value with a newline inside) would otherwise make h11 raise an error that quotes the
    whole header, token included, in a form Airflow's secret masker does not recognise.

    :param token: the token, surrounding whitespace already stripped.
    :param conn_id: the connection id, for the message.
    """
    if not token:
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r} has no API token: put the RunComfy API token in its password "
            f"('API token' in the UI)."
        )
    if TOKEN_PATTERN.match(token):
        return token
    if token[:7].lower() == "bearer " and TOKEN_PATTERN.match(token[7:].strip()):
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: the API token starts with 'Bearer '. Enter the token alone in the "
            f"connection's password ('API token' in the UI): the provider adds 'Bearer ' itself. Nothing was "
            f"sent."
        )
    kinds = []
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in token):
        kinds.append("a line break, tab or other control character")
    if " " in token:
        kinds.append("a space")
    if any(ord(char) > 0x7E for char in token):
        kinds.append("a non-ASCII character")
    raise SeedanceConfigurationError(
        f"Connection {conn_id!r}: the API token contains {' and '.join(kinds)}, which an HTTP header cannot "
        f"carry (often a bad paste, or a secret stored with a line break inside). Enter the token again in "
        f"the connection's password ('API token' in the UI). The value is not shown here. Nothing was sent."
    )


def _network_settings(extra: Mapping[str, Any], conn_id: str) -> dict[str, Any]:
    """
    Read the ``verify``, ``ca_bundle`` and ``proxy`` extras, failing on a bad one before any HTTP call.

    :param extra: the connection's extra.
    :param conn_id: the connection id, for messages.
    """
    verify: bool = True
    ca_bundle = extra.get("ca_bundle") or None
    bundle_key = "ca_bundle"
    raw_verify = extra.get("verify")
    if raw_verify is None or raw_verify == "":
        raw_verify = True
    if isinstance(raw_verify, str) and raw_verify.strip().lower() in _BOOLEAN_WORDS:
        raw_verify = _BOOLEAN_WORDS[raw_verify.strip().lower()]
    if isinstance(raw_verify, bool):
        verify = raw_verify
    elif isinstance(raw_verify, str) and raw_verify.strip():
        # requests' convention, also the Amazon provider's: a path in `verify` is the CA bundle.
        if ca_bundle is not None and ca_bundle != raw_verify:
            raise SeedanceConfigurationError(
                f"Connection {conn_id!r}: extras 'verify' and 'ca_bundle' name different CA bundles; "
                f"keep one ('ca_bundle')."
            )
        ca_bundle, bundle_key = raw_verify, "verify"
    else:
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: extra 'verify' must be true, false or a CA bundle path, got "
            f"{raw_verify!r}."
        )
    if ca_bundle is not None:
        if not verify:
            raise SeedanceConfigurationError(
                f"Connection {conn_id!r}: extra 'ca_bundle' is set but 'verify' is false; a CA bundle is "
                f"only used to verify certificates, so remove one of them."
            )
        if not isinstance(ca_bundle, str) or not os.path.exists(os.path.expanduser(ca_bundle)):
            raise SeedanceConfigurationError(
                f"Connection {conn_id!r}: extra {bundle_key!r} must be the path of a PEM file (or a hashed "
                f"certificate directory) present on every Airflow component that calls the API, got "
                f"{ca_bundle!r}."
            )
        ca_bundle = os.path.expanduser(ca_bundle)
    return {"verify": verify, "ca_bundle": ca_bundle, "proxy": _proxy_url(extra.get("proxy"), conn_id)}


_BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _proxy_url(value: Any, conn_id: str) -> str | None:
    """
    Return the ``proxy`` extra once checked; messages show it without its password.

    :param value: the extra's value.
    :param conn_id: the connection id, for messages.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    shown = redact_url(value) if isinstance(value, str) else type(value).__name__
    try:
        url = httpx.URL(value.strip()) if isinstance(value, str) else None
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is None or url.scheme not in PROXY_SCHEMES or not url.host:
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: extra 'proxy' must be a URL such as http://proxy.example.com:3128 "
            f"(schemes: {', '.join(PROXY_SCHEMES)}), got {shown}."
        )
    if url.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: the SOCKS proxy {shown} needs httpx's SOCKS support: "
            f"pip install 'httpx[socks]'."
        )
    return str(value).strip()


def redact_url(url: str) -> str:
    """
    Return ``url`` with its user info (``user:password@``) replaced by ``***@``, for logs, reprs and messages.

    The whole user info goes: some proxies take a token as the user name. Everything up to the last ``@``
    counts as user info, so a password holding an unencoded ``/`` or ``@`` is hidden too.

    :param url: a URL that may carry credentials.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def _extra_dict(conn: Any, conn_id: str) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson
    except Exception as err:  # a malformed extra must not leak its content (it may hold secrets)
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r} has an extra that is not valid JSON."
        ) from err
    return extra if isinstance(extra, dict) else {}


def _positive_number(value: Any, name: str, conn_id: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number < 0 or (number == 0 and not allow_zero) or isinstance(value, bool):
        raise SeedanceConfigurationError(
            f"Connection {conn_id!r}: extra {name!r} must be a "
            f"{'non-negative' if allow_zero else 'positive'} number, got {value!r}."
        )
    return number


def normalize_base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """
    Turn a connection's host (and port) into a base URL: empty means the real API; no scheme means https.

    :param host: the connection host: ``model-api.runcomfy.net``, ``https://...`` or
        ``http://127.0.0.1:8765``.
    :param port: the connection port, added when the host has none.
    :param schema: the connection schema field, accepted as the scheme when it is ``http`` or ``https``.
    """
    text = (host or "").strip().rstrip("/")
    if not text:
        return DEFAULT_BASE_URL
    if "://" not in text:
        scheme = schema if schema in ("http", "https") else "https"
        text = f"{scheme}://{text}"
    url = httpx.URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise SeedanceConfigurationError(
            f"The connection host {host!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}."
        )
    if port and url.port is None:
        url = url.copy_with(port=int(port))
    return str(url).rstrip("/")
