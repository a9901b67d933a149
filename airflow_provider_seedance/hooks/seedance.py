"""Hook for the RunComfy Model API (ByteDance Seedance), sync and async, on httpx."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import ssl
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import httpx
from airflow.providers.common.compat.sdk import BaseHook
from pydantic import BaseModel, ValidationError

from airflow_provider_seedance import __version__
from airflow_provider_seedance._state_log import log_state
from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceAuthenticationError,
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceError,
    SeedanceInputError,
    SeedanceInputRejectedError,
    SeedanceInsufficientBalanceError,
    SeedanceInvalidIdentifierError,
    SeedanceMalformedResponseError,
    SeedanceNotFoundError,
    SeedancePermissionDeniedError,
    SeedanceRateLimitError,
    SeedanceServerError,
    SeedanceSubmissionStateUnknownError,
    SeedanceTransientError,
)
from airflow_provider_seedance.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL, UI_FIELD_BEHAVIOUR
from airflow_provider_seedance.hooks.retry import (
    RETRY_JITTER_SECONDS,
    RETRY_WAIT_INITIAL_SECONDS,
    BackoffWait,
    async_retrying,
    parse_retry_after,
    retrying,
)
from airflow_provider_seedance.models import (
    MODEL_ID_PATTERN,
    REQUEST_ID_PATTERN,
    CancelResponse,
    ModelInfo,
    ResultResponse,
    SeedanceInputModel,
    StatusResponse,
    SubmitResponse,
    describe_error,
)
from airflow_provider_seedance.version_compat import aget_connection, hook_field_behaviour, hook_form_widgets

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "seedance_default"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 5

ASYNC_MAX_CONNECTIONS = 20
"""Connections per shared async client: thousands of triggers poll through this one pool."""

ASYNC_MAX_KEEPALIVE = 20
SYNC_MAX_CONNECTIONS = 4

KEEPALIVE_EXPIRY_SECONDS = 45.0
"""
Seconds an idle pooled connection stays open (httpx's default, 5 s, equals a 5 s poll interval, so a fan-in
closed its connections just before the next poll and reopened them: a TLS handshake each time).

Longer than the poll intervals a fan-in uses (default 10 s; 5-30 s in practice): N triggers polling every P
seconds send N/P requests per second through at most ``ASYNC_MAX_CONNECTIONS`` connections, so a pooled
connection is idle for far less than one interval and each one is opened once. Shorter than the idle
timeouts of the front ends an API sits behind (HAProxy's classic ``timeout client 50s``, AWS ALB 60 s, nginx
``keepalive_timeout 75s``, Google Cloud load balancers 600 s), so the client drops an idle connection before
the server does: a request written to a connection the server is closing at that moment fails, and a
submit is never retried. A poll interval above this expiry only matters when a handful of triggers share a
pool (a connection then waits longer than 45 s between polls): one handshake per poll, at most one per
45 s, which costs nothing worth keeping a connection past a load balancer's timeout for.
"""

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
"""Proxy URL schemes httpx speaks (the SOCKS ones need ``httpx[socks]``)."""

CONNECTION_TEST_REQUEST_ID = "airflow-connection-test"
"""A request id that never exists: 404 (or 400001) for it proves the token was accepted; it starts nothing."""

TOKEN_PATTERN = re.compile(r"^[\x21-\x7e]+$")
"""What a bearer token may hold: visible ASCII. h11 refuses control characters in a header (and quotes the
whole header in its error), httpx refuses non-ASCII, and no RunComfy token has a space."""

USER_AGENT = f"airflow-provider-seedance/{__version__}"

_Model = TypeVar("_Model", bound=BaseModel)

# RunComfy's documented error codes, each with what the user should do about it.
_ERROR_CODES: dict[int, tuple[type[SeedanceAPIError], str]] = {
    400001: (
        SeedanceInvalidIdentifierError,
        "Check the model id (e.g. bytedance/seedance-v1.5-pro/image-to-video) or request id.",
    ),
    403001: (
        SeedancePermissionDeniedError,
        "The request belongs to another RunComfy account: use that account's token.",
    ),
    404001: (
        SeedanceNotFoundError,
        "The request id is unknown, deleted or expired; outputs are kept for a limited time.",
    ),
    400002: (
        SeedanceInsufficientBalanceError,
        "The RunComfy account has no balance left: top it up, then retry.",
    ),
    400004: (
        SeedanceAuthenticationError,
        "The API token is missing, expired or revoked: update the connection's API token.",
    ),
}

_HTTP_STATUSES: dict[int, tuple[type[SeedanceAPIError], str]] = {
    400: (SeedanceInputRejectedError, "The API rejected the request; check the input fields."),
    401: _ERROR_CODES[400004],
    402: _ERROR_CODES[400002],
    403: _ERROR_CODES[403001],
    404: (SeedanceNotFoundError, "Check the model id or request id; requests expire after a while."),
    407: (
        SeedanceAPIError,
        "The proxy refused its credentials: check the user and password in the connection's 'proxy' extra "
        "(or HTTP_PROXY / HTTPS_PROXY).",
    ),
    422: (SeedanceInputRejectedError, "The API rejected the input fields; fix them and submit again."),
}


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
            f"Connection {conn_id!r}: extra 'verify' must be true, false or a CA bundle path, got {raw_verify!r}."
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
            f"Connection {conn_id!r}: extra {name!r} must be a {'non-negative' if allow_zero else 'positive'} "
            f"number, got {value!r}."
        )
    return number


def normalize_base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """
    Turn a connection's host (and port) into a base URL: empty means the real API; no scheme means https.

    :param host: the connection host: ``model-api.runcomfy.net``, ``https://...`` or ``http://127.0.0.1:8765``.
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


def check_request_id(request_id: object) -> str:
    """
    Return ``request_id`` if it has the shape of a RunComfy request id, else raise before any HTTP call.

    :param request_id: the candidate id.
    """
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        raise SeedanceInputError(
            f"request_id: must be 1-128 characters of letters, digits, '_' or '-' (got {request_id!r})"
        )
    return request_id


def check_model_id(model_id: object) -> str:
    """
    Return ``model_id`` if it is a valid slash-separated model id, else raise before any HTTP call.

    :param model_id: the candidate id, e.g. ``bytedance/seedance-v1.5-pro/image-to-video``.
    """
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.match(model_id.strip()):
        raise SeedanceInputError(
            "model_id: must be a RunComfy model id such as 'bytedance/seedance-v1.5-pro/image-to-video' "
            f"(segments of letters, digits, '.', '_' or '-' separated by '/'), got {model_id!r}"
        )
    return model_id.strip()


def payload_to_body(payload: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """
    Turn a submit payload (a mapping or a pydantic model) into the JSON body, rejecting what JSON cannot carry.

    :param payload: the model's input fields.
    """
    if isinstance(payload, SeedanceInputModel):
        # Typed inputs decide which fields go on the wire (sparse models leave unset defaults out).
        return payload.to_request_body()
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    if not isinstance(payload, Mapping):
        raise SeedanceInputError(
            f"input: must be a mapping of the model's input fields, got {type(payload).__name__}"
        )
    body = dict(payload)
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SeedanceInputError(f"input: every value must be JSON-serialisable ({err})") from None
    return body


# ---------------------------------------------------------------------------------------------------------
# Response interpretation, shared by the sync and async sides
# ---------------------------------------------------------------------------------------------------------


def _error_fields(body: Any) -> tuple[int | None, str]:
    """Pull RunComfy's error code and message out of any of the body shapes seen in the wild."""
    if not isinstance(body, Mapping):
        return None, describe_error(body)
    code = body.get("error_code", body.get("code"))
    try:
        code = int(code) if code is not None and not isinstance(code, bool) else None
    except (TypeError, ValueError):
        code = None
    message = ""
    for key in ("error_message", "message", "error", "detail"):
        if body.get(key):
            message = describe_error(body[key])
            break
    detail = body.get("detail")
    if detail and message and describe_error(detail) not in message:
        message = f"{message} ({describe_error(detail)})"
    return code, message


def interpret_response(
    response: httpx.Response, *, call: str, request_id: str | None = None
) -> dict[str, Any]:
    """
    Return the JSON body of a successful answer, or raise the exception the answer means.

    :param response: the HTTP response (fully read).
    :param call: what was called, for messages (``submit``, ``status``, ``result``, ``cancel``, ``model``).
    :param request_id: the request the call was about, for messages.
    """
    status = response.status_code
    about = f" for request {request_id}" if request_id else ""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
        if 200 <= status < 300:
            raise SeedanceMalformedResponseError(
                f"The API's {call} answer{about} was not valid JSON (HTTP {status}).",
                status_code=status,
                request_id=request_id,
            ) from None

    code, message = _error_fields(body)
    # Some RunComfy APIs answer HTTP 200 with an error body: that is an error, not a success.
    if 200 <= status < 300 and code is None and isinstance(body, dict):
        return body
    if 200 <= status < 300 and not isinstance(body, dict):
        raise SeedanceMalformedResponseError(
            f"The API's {call} answer{about} was JSON but not an object (HTTP {status}).",
            status_code=status,
            request_id=request_id,
        )

    retry_after = parse_retry_after(response.headers.get("retry-after"))
    text = message or response.reason_phrase or "no details"
    prefix = f"Seedance {call}{about} failed: HTTP {status}" + (f", error_code {code}" if code else "")
    # Only idempotent calls are retried: a submit never is (no idempotency key), so its hint must not say so.
    retried = "the call is retried with backoff." if call != "submit" else "submissions are never retried."
    if code in _ERROR_CODES:
        cls, hint = _ERROR_CODES[code]
    elif status in (408, 429):
        cls, hint = SeedanceRateLimitError, f"The API asked to slow down; {retried}"
    elif status >= 500:
        cls, hint = SeedanceServerError, f"The API had a server error; {retried}"
    elif status in _HTTP_STATUSES:
        cls, hint = _HTTP_STATUSES[status]
    else:
        cls, hint = SeedanceAPIError, "See the RunComfy error codes documentation."
    return _raise(cls, f"{prefix}: {text}. {hint}", status, code, request_id, retry_after)


def _raise(
    cls: type[SeedanceAPIError],
    message: str,
    status: int,
    code: int | None,
    request_id: str | None,
    retry_after: float | None,
) -> Any:
    if issubclass(cls, SeedanceTransientError):
        raise cls(
            message, status_code=status, error_code=code, request_id=request_id, retry_after=retry_after
        )
    raise cls(message, status_code=status, error_code=code, request_id=request_id)


_HEADER_WORDS = ("bearer", "authorization")


def safe_error_text(exc: BaseException) -> str:
    """
    Describe an httpx/httpcore/h11 error as ``Type: text``, unless its text could quote a request header.

    h11 refuses a request it cannot write with a message quoting the offending header
    (``Illegal header value b'Bearer <token>'``): such a text, and any text naming a bearer or
    Authorization header, is replaced by a description that quotes nothing.

    :param exc: the error.
    """
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, httpx.LocalProtocolError) or any(word in text.lower() for word in _HEADER_WORDS):
        return f"{name} (its message is withheld: it may quote a request header)"
    return f"{name}: {text}" if text else name


def unsendable_request_error(
    exc: httpx.HTTPError, *, call: str, about: str = ""
) -> SeedanceConfigurationError:
    """
    Describe a request the HTTP library refused to write: nothing reached the API, retrying cannot help.

    :param exc: the error (an ``httpx.LocalProtocolError``).
    :param call: what was called.
    :param about: what the call was about, for the message (e.g. `` for request abc``).
    """
    return SeedanceConfigurationError(
        f"Seedance {call}{about} could not be sent: {safe_error_text(exc)}. A header or the URL holds a "
        f"character HTTP does not allow: check the connection's API token and Base URL. Nothing was sent."
    )


def transport_error(
    exc: httpx.HTTPError, *, call: str, request_id: str | None = None
) -> SeedanceConnectionError | SeedanceConfigurationError:
    """
    Wrap an httpx transport failure (connect error, timeout, dropped connection) in a retryable error.

    A request the HTTP library refused to write (``LocalProtocolError``) is a configuration error instead:
    it was not sent, and sending it again cannot work. Raise the result outside the ``except`` block that
    caught ``exc``, so the original (whose text may quote a header) is not chained to it.

    :param exc: the httpx error.
    :param call: what was called.
    :param request_id: the request the call was about.
    """
    about = f" for request {request_id}" if request_id else ""
    if isinstance(exc, httpx.LocalProtocolError):
        return unsendable_request_error(exc, call=call, about=about)
    return SeedanceConnectionError(
        f"Seedance {call}{about} failed in transport: {safe_error_text(exc)}{_network_hint(exc)}",
        request_id=request_id,
    )


def _network_hint(exc: httpx.HTTPError) -> str:
    """
    Say which connection extra fixes a TLS or proxy failure (empty for other failures).

    :param exc: the httpx error.
    """
    if isinstance(exc, httpx.ProxyError):
        return ". Check the connection's 'proxy' extra (or the HTTPS_PROXY / NO_PROXY environment variables)."
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (
            ". The API's TLS certificate is not trusted: behind a private CA or a TLS-inspecting proxy, point "
            "the connection's 'ca_bundle' extra at that CA's PEM file."
        )
    return ""


def submission_error(exc: Exception, *, model_id: str) -> Exception:
    """
    Classify a failed submit: definitely-not-sent, definitely-rejected, or state unknown (never retried).

    :param exc: what the POST raised (an httpx error or one of ours from :func:`interpret_response`).
    :param model_id: the model the submission was for.
    """
    if isinstance(exc, httpx.ConnectError):
        # The TCP/TLS connection was never established, so the API cannot have seen the request.
        return SeedanceConnectionError(
            f"Could not connect to the RunComfy API to submit to {model_id}: {safe_error_text(exc)}. Nothing "
            f"was submitted; check the connection's Base URL and the network."
        )
    if isinstance(exc, httpx.LocalProtocolError):
        # h11 refused to write the request line or headers: not a byte of the request reached the API.
        return unsendable_request_error(exc, call="submit", about=f" to {model_id}")
    # A timeout, a cut connection, a 5xx or a garbled 2xx: the API may have accepted the request.
    if isinstance(exc, (httpx.HTTPError, SeedanceServerError, SeedanceMalformedResponseError)):
        text = safe_error_text(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
        return SeedanceSubmissionStateUnknownError(
            f"Submission state unknown for model {model_id}: {text.rstrip('.')}. The API may or may not have "
            f"created (and billed) the request, so it is NOT retried automatically. Check your RunComfy "
            f"request history before running the task again.",
            model_id=model_id,
        )
    return exc


def parse_submission(response: httpx.Response, *, model_id: str) -> SubmitResponse:
    """
    Return the request a submit answer created, or raise the submission error it amounts to.

    An answer whose body names a ``request_id`` is a created request, whatever else it says: a 2xx is
    followed (with a warning when it also carries an error), any other status is "submission state
    unknown" naming the id. Only an answer that names no id can be a plain refusal.

    :param response: the answer to ``POST /v1/models/{model_id}``.
    :param model_id: the model submitted to, for the error message.
    """
    try:
        body: Any = response.json()
    except ValueError:  # not JSON (json.JSONDecodeError and UnicodeDecodeError are ValueErrors)
        body = None
    if isinstance(body, Mapping) and body.get("request_id") is not None:
        return _created_request(response, body, model_id=model_id)
    try:
        return SubmitResponse.model_validate(interpret_response(response, call="submit"))
    except ValidationError as err:
        raise submission_error(
            SeedanceMalformedResponseError(f"the answer had no valid request_id ({err.errors()[0]['msg']})"),
            model_id=model_id,
        ) from None
    except (httpx.HTTPError, SeedanceAPIError) as exc:
        raise submission_error(exc, model_id=model_id) from None


_UNKNOWN_ADVICE = (
    "It is NOT submitted again automatically. Follow it with SeedanceRequestSensor, or check your RunComfy "
    "request history, before running the task again."
)


def _created_request(response: httpx.Response, body: Mapping[str, Any], *, model_id: str) -> SubmitResponse:
    """
    Interpret a submit answer that names a request id: the API created (and bills) that request.

    :param response: the answer.
    :param body: its JSON object, holding ``request_id``.
    :param model_id: the model submitted to.
    """
    status = response.status_code
    named = body["request_id"]
    if not isinstance(named, str) or not REQUEST_ID_PATTERN.match(named):
        shown = repr(named) if len(repr(named)) <= 80 else repr(named)[:77] + "..."
        raise SeedanceSubmissionStateUnknownError(
            f"Submission state unknown for model {model_id}: the API's answer (HTTP {status}) names the "
            f"request id {shown}, which is not a RunComfy request id (1-128 letters, digits, '_' or '-'), "
            f"so this task cannot follow it. The API may have created (and billed) that request. "
            f"{_UNKNOWN_ADVICE}",
            model_id=model_id,
        )
    if not 200 <= status < 300:
        try:
            interpret_response(response, call="submit")
            reason = f"HTTP {status}"  # pragma: no cover (a non-2xx answer always raises)
        except SeedanceAPIError as exc:
            reason = str(exc).rstrip(".")
        raise SeedanceSubmissionStateUnknownError(
            f"Submission state unknown for model {model_id}: the API answered with an error ({reason}), yet "
            f"its answer names request {named}: that request may exist and run (and be billed). "
            f"{_UNKNOWN_ADVICE}",
            model_id=model_id,
            request_id=named,
        )
    code, message = _error_fields(body)
    if code not in (None, 0) or body.get("error") or body.get("error_message"):
        log.warning(
            "The API's submit answer for %s names request %s but also carries error_code %s (%s): a request "
            "with an id was created, so it is followed (never submitted again); its status will tell how "
            "it ends.",
            model_id,
            named,
            code,
            message or "no message",
        )
    try:
        return SubmitResponse.model_validate(body)
    except ValidationError:
        # Garbled URLs beside a good id: the id is all the provider needs (it builds the URLs itself).
        return SubmitResponse(request_id=named)


# ---------------------------------------------------------------------------------------------------------
# Shared async clients: one connection pool per event loop and per (URL, token, timeout)
# ---------------------------------------------------------------------------------------------------------

_ASYNC_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], httpx.AsyncClient]
] = weakref.WeakKeyDictionary()


def _client_kwargs(config: SeedanceConnectionConfig, max_connections: int) -> dict[str, Any]:
    """
    Return the settings of an API client, sync or async: one place, so both honour the same connection.

    :param config: the resolved connection config.
    :param max_connections: the pool size.
    """
    if config.proxy is not None:
        log.info("Seedance API calls to %s go through the proxy %s", config.base_url, config.proxy_display)
    return {
        "base_url": config.base_url,
        "headers": {
            "Authorization": f"Bearer {config.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        "timeout": httpx.Timeout(config.timeout),
        "limits": httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        "follow_redirects": False,
        "verify": _tls_verify(config),
        # Without a `proxy` extra, httpx reads HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY, and with
        # neither extra SSL_CERT_FILE / SSL_CERT_DIR, from the environment (trust_env): what curl users expect.
        "proxy": config.proxy,
        "trust_env": True,
    }


def _tls_verify(config: SeedanceConnectionConfig) -> ssl.SSLContext | bool:
    """
    Return what the client verifies the API's certificate with: ``True`` (the default store), ``False``,
    or a context trusting only the connection's ``ca_bundle``.

    :param config: the resolved connection config.
    """
    if not config.verify:
        log.warning(
            "TLS certificate verification is OFF for the Seedance API at %s (connection extra verify=false): "
            "anyone on the network path can read the API token. Use 'ca_bundle' for a private CA instead.",
            config.base_url,
        )
        return False
    if config.ca_bundle is None:
        return True
    try:
        if os.path.isdir(config.ca_bundle):
            return ssl.create_default_context(capath=config.ca_bundle)
        return ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as err:
        raise SeedanceConfigurationError(
            f"The CA bundle {config.ca_bundle!r} of the seedance connection could not be loaded ({err}); "
            f"it must hold PEM certificates."
        ) from None


def shared_async_client(config: SeedanceConnectionConfig) -> httpx.AsyncClient:
    """
    Return the async client shared by every hook with this config in the running event loop.

    :param config: the resolved connection config.
    """
    loop = asyncio.get_running_loop()
    clients = _ASYNC_CLIENTS.setdefault(loop, {})
    client = clients.get(config.client_key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(**_client_kwargs(config, ASYNC_MAX_CONNECTIONS))
        clients[config.client_key] = client
    return client


_REQUEST_SLOTS: weakref.WeakKeyDictionary[httpx.AsyncClient, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def request_slot(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """
    Hold one of the ``ASYNC_MAX_CONNECTIONS`` request slots of ``client`` while a request runs.

    Requests wait here, in a FIFO semaphore, instead of in httpcore's pool: httpcore 1.0 rescans every
    queued request against every connection whenever a request enters or leaves the pool
    (encode/httpcore#1035), so a burst of 1,000 polls into a pool of 20 stalled the event loop for seconds.
    A semaphore wakes the next waiter in O(1). There is deliberately no timeout on the wait: every request
    holding a slot has its own connect/read timeouts, so the queue always drains, and under overload a
    waiting timeout only turned queued polls into failures and retries (5,000 concurrent polls: 866 failed
    and 37% more CPU with a 10 s wait timeout, none failed without; see docs/benchmarks.md).

    :param client: a client from :func:`shared_async_client`.
    """
    slots = _REQUEST_SLOTS.get(client)
    if slots is None:
        slots = _REQUEST_SLOTS[client] = asyncio.Semaphore(ASYNC_MAX_CONNECTIONS)
    async with slots:
        yield


async def aclose_shared_clients() -> None:
    """Close the shared async clients of the running event loop (tests and benchmarks call this)."""
    clients = _ASYNC_CLIENTS.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


# ---------------------------------------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------------------------------------


class SeedanceHook(BaseHook):
    """
    Call the RunComfy Model API: submit a generation, read its status and result, cancel it.

    GETs and cancel are retried on 408/429/5xx, transport errors and garbled answers, with exponential
    backoff and jitter, honouring ``Retry-After``. Submissions are never retried.

    :param seedance_conn_id: the ``seedance`` connection holding the API token (password) and base URL (host).
    :param timeout: seconds per HTTP call; overrides the connection's ``timeout`` extra.
    :param max_retries: retries of idempotent calls; overrides the connection's ``max_retries`` extra.
    :param deadline: epoch seconds; no retry of a status, result or catalog read waits past it (the last
        error is raised instead), so a caller bounded by a deadline is never held beyond it by backoff or
        ``Retry-After``. ``None``: no deadline. Cancels are not bounded: they run once a deadline has passed.
    """

    conn_name_attr = "seedance_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "seedance"
    hook_name = "Seedance (RunComfy)"

    def __init__(
        self,
        seedance_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seedance_conn_id = seedance_conn_id
        self.timeout = timeout
        self.max_retries = max_retries
        self.deadline = deadline
        self._aconfig: SeedanceConnectionConfig | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seedance_conn_id={self.seedance_conn_id!r})"

    # -- UI ---------------------------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Describe the connection form's standard fields (read by Airflow < 3.2; see ``version_compat``)."""
        return hook_field_behaviour(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Add the extras to the connection form (read by Airflow < 3.2; needs ``wtforms``)."""
        return hook_form_widgets(CONN_FIELDS)

    # -- configuration -----------------------------------------------------------------------------------

    def _apply_overrides(self, config: SeedanceConnectionConfig) -> SeedanceConnectionConfig:
        # replace() carries every other field (TLS, proxy) over unchanged.
        return dataclasses.replace(
            config,
            timeout=float(self.timeout) if self.timeout is not None else config.timeout,
            max_retries=int(self.max_retries) if self.max_retries is not None else config.max_retries,
        )

    @cached_property
    def config(self) -> SeedanceConnectionConfig:
        """The resolved connection (sync lookup; use :meth:`aget_config` inside an event loop)."""
        conn = self.get_connection(self.seedance_conn_id)
        return self._apply_overrides(SeedanceConnectionConfig.from_connection(conn, self.seedance_conn_id))

    async def aget_config(self) -> SeedanceConnectionConfig:
        """Resolve the connection without blocking the event loop (cached on the hook)."""
        if self._aconfig is None:
            conn = await aget_connection(self, self.seedance_conn_id)
            self._aconfig = self._apply_overrides(
                SeedanceConnectionConfig.from_connection(conn, self.seedance_conn_id)
            )
        return self._aconfig

    @cached_property
    def client(self) -> httpx.Client:
        """The sync HTTP client (connection pooling across calls of this hook)."""
        return httpx.Client(**_client_kwargs(self.config, SYNC_MAX_CONNECTIONS))

    def get_conn(self) -> httpx.Client:
        """Return the sync HTTP client, as Airflow hooks conventionally do."""
        return self.client

    def close(self) -> None:
        """Close the sync HTTP client, if one was opened."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()

    def detached(self) -> SeedanceHook:
        """
        Return a hook on the same connection with an HTTP client of its own (none opened yet).

        The connection this hook already resolved is carried over, so the copy looks nothing up: safe in a
        signal handler (``on_kill``) that cut into a call on this hook's client. Close it after use.
        """
        twin = SeedanceHook(self.seedance_conn_id, timeout=self.timeout, max_retries=self.max_retries)
        if "config" in self.__dict__:
            twin.__dict__["config"] = self.__dict__["config"]
        return twin

    # -- sync API ------------------------------------------------------------------------------------

    def _get(
        self, call: str, path: str, model: type[_Model], request_id: str | None = None, **params: Any
    ) -> _Model:
        return self._idempotent(call, "GET", path, model, request_id, params, deadline=self.deadline)

    def _idempotent(
        self,
        call: str,
        method: str,
        path: str,
        model: type[_Model],
        request_id: str | None,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> _Model:
        config = self.config
        for attempt in retrying(call, config.max_retries, config.backoff(), deadline=deadline):
            with attempt:
                failure: Exception | None = None
                try:
                    response = self.client.request(method, path, params=params or None)
                except httpx.HTTPError as exc:
                    failure = transport_error(exc, call=call, request_id=request_id)
                if failure is not None:
                    raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
                return _parse(
                    model, interpret_response(response, call=call, request_id=request_id), call, request_id
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _submitted(self, response: httpx.Response, model_id: str) -> SubmitResponse:
        """
        Parse a submit answer (sync and async share it) and log the ``submitted`` state.

        :param response: the answer of the submit POST.
        :param model_id: the model submitted to.
        """
        submitted = parse_submission(response, model_id=model_id)
        log_state(
            self.log,
            "submitted",
            submitted.request_id,
            "Submitted a %s generation: request_id=%s",
            model_id,
            submitted.request_id,
        )
        return submitted

    def submit(self, model_id: str, payload: Mapping[str, Any] | BaseModel) -> SubmitResponse:
        """
        Submit one generation (``POST /v1/models/{model_id}``). Never retried: a repeat could bill twice.

        :param model_id: the RunComfy model id, e.g. ``bytedance/seedance-v1.5-pro/image-to-video``.
        :param payload: the model's input fields, as a mapping or a pydantic model.
        """
        model_id = check_model_id(model_id)
        body = payload_to_body(payload)
        failure: Exception | None = None
        try:
            response = self.client.post(f"/v1/models/{model_id}", json=body)
        except httpx.HTTPError as exc:
            failure = submission_error(exc, model_id=model_id)
        if failure is not None:
            raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
        return self._submitted(response, model_id)

    def get_status(self, request_id: str) -> StatusResponse:
        """
        Read a request's status (``GET /v1/requests/{request_id}/status``), retrying transient failures.

        :param request_id: the request id returned by :meth:`submit`.
        """
        request_id = check_request_id(request_id)
        return self._get("status", f"/v1/requests/{request_id}/status", StatusResponse, request_id)

    def get_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """
        Read a request's result (``GET /v1/requests/{request_id}/result``), retrying transient failures.

        :param request_id: the request id returned by :meth:`submit`.
        :param include_cost: ask for the run's ``cost`` in USD.
        """
        request_id = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else {}
        return self._get("result", f"/v1/requests/{request_id}/result", ResultResponse, request_id, **params)

    def cancel(self, request_id: str) -> CancelResponse:
        """
        Ask the API to cancel a request; only queued ones can be (the outcome says which happened).

        :param request_id: the request id returned by :meth:`submit`.
        """
        request_id = check_request_id(request_id)
        outcome = self._idempotent(
            "cancel", "POST", f"/v1/requests/{request_id}/cancel", CancelResponse, request_id
        )
        self._log_cancel(request_id, outcome)
        return outcome

    def get_model(self, model_id: str) -> ModelInfo:
        """
        Read a model's catalog entry and price (``GET /v1/models/{model_id}``, undocumented but used by RunComfy's CLI).

        :param model_id: the RunComfy model id.
        """
        model_id = check_model_id(model_id)
        return self._get("model", f"/v1/models/{model_id}", ModelInfo)

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the URL and token with one cheap authenticated GET that starts nothing.

        The probe asks for the status of a request id that never exists: "not found" (404/404001) or
        "unknown id" (400001) means the API accepted the token and looked the id up.
        """
        failure: SeedanceError | None = None
        try:
            response = self.client.get(f"/v1/requests/{CONNECTION_TEST_REQUEST_ID}/status")
            interpret_response(response, call="connection test")
        except (SeedanceNotFoundError, SeedanceInvalidIdentifierError) as err:
            if err.http_status not in (401, 403):
                return True, f"Connection to {self.config.base_url} works: the API token was accepted."
            failure = err
        except SeedanceError as err:
            failure = err
        except httpx.HTTPError as exc:
            failure = transport_error(exc, call="connection test")
        if failure is not None:
            return False, str(failure)
        return True, f"Connection to {self.config.base_url} works."

    # -- async API -----------------------------------------------------------------------------------

    async def _aidempotent(
        self,
        call: str,
        method: str,
        path: str,
        model: type[_Model],
        request_id: str | None,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> _Model:
        config = await self.aget_config()
        client = shared_async_client(config)
        async for attempt in async_retrying(call, config.max_retries, config.backoff(), deadline=deadline):
            with attempt:
                failure: Exception | None = None
                try:
                    async with request_slot(client):
                        response = await client.request(method, path, params=params or None)
                except httpx.HTTPError as exc:
                    failure = transport_error(exc, call=call, request_id=request_id)
                if failure is not None:
                    raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
                return _parse(
                    model, interpret_response(response, call=call, request_id=request_id), call, request_id
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def asubmit(self, model_id: str, payload: Mapping[str, Any] | BaseModel) -> SubmitResponse:
        """
        Submit one generation without blocking the event loop. Never retried.

        :param model_id: the RunComfy model id.
        :param payload: the model's input fields, as a mapping or a pydantic model.
        """
        model_id = check_model_id(model_id)
        body = payload_to_body(payload)
        client = shared_async_client(await self.aget_config())
        failure: Exception | None = None
        try:
            async with request_slot(client):
                response = await client.post(f"/v1/models/{model_id}", json=body)
        except httpx.HTTPError as exc:
            failure = submission_error(exc, model_id=model_id)
        if failure is not None:
            raise failure  # raised outside `except`: h11's text (may quote a header) is not chained
        return self._submitted(response, model_id)

    async def aget_status(self, request_id: str) -> StatusResponse:
        """
        Read a request's status without blocking the event loop.

        :param request_id: the request id.
        """
        request_id = check_request_id(request_id)
        return await self._aidempotent(
            "status",
            "GET",
            f"/v1/requests/{request_id}/status",
            StatusResponse,
            request_id,
            deadline=self.deadline,
        )

    async def aget_result(self, request_id: str, *, include_cost: bool = False) -> ResultResponse:
        """
        Read a request's result without blocking the event loop.

        :param request_id: the request id.
        :param include_cost: ask for the run's ``cost`` in USD.
        """
        request_id = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else None
        return await self._aidempotent(
            "result",
            "GET",
            f"/v1/requests/{request_id}/result",
            ResultResponse,
            request_id,
            params,
            deadline=self.deadline,
        )

    async def acancel(self, request_id: str) -> CancelResponse:
        """
        Ask the API to cancel a request without blocking the event loop.

        :param request_id: the request id.
        """
        request_id = check_request_id(request_id)
        outcome = await self._aidempotent(
            "cancel", "POST", f"/v1/requests/{request_id}/cancel", CancelResponse, request_id
        )
        self._log_cancel(request_id, outcome)
        return outcome

    async def aget_model(self, model_id: str) -> ModelInfo:
        """
        Read a model's catalog entry and price without blocking the event loop.

        :param model_id: the RunComfy model id.
        """
        model_id = check_model_id(model_id)
        return await self._aidempotent(
            "model", "GET", f"/v1/models/{model_id}", ModelInfo, None, deadline=self.deadline
        )

    def _log_cancel(self, request_id: str, outcome: CancelResponse) -> None:
        if outcome.cancelled:
            self.log.info("Cancelled Seedance request %s", request_id)
        else:
            self.log.info(
                "Seedance request %s was not cancellable (outcome=%s, status=%s): only queued requests can "
                "be cancelled; a running one finishes and is billed.",
                request_id,
                outcome.outcome,
                outcome.status,
            )


def _parse(model: type[_Model], data: dict[str, Any], call: str, request_id: str | None) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        about = f" for request {request_id}" if request_id else ""
        first = err.errors()[0]
        raise SeedanceMalformedResponseError(
            f"The API's {call} answer{about} does not have the expected shape: "
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}.",
            request_id=request_id,
        ) from None
