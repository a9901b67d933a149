"""What the API's answers mean: errors by status and code, transport failures, submissions, bodies."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from airflow_provider_seedance.exceptions import (
    SeedanceAPIError,
    SeedanceAuthenticationError,
    SeedanceConfigurationError,
    SeedanceConnectionError,
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
from airflow_provider_seedance.hooks.retry import parse_retry_after
from airflow_provider_seedance.models import REQUEST_ID_PATTERN, SubmitResponse, describe_error, short_repr

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

SECRET_MASK = "***"
"""What replaces the API token wherever an answer repeats it (as Airflow's secrets masker writes)."""

SECRET_MASK_MIN_LENGTH = 5
"""Shorter tokens are not masked in answers (Airflow's ``min_length_masked_secret`` default): masking a
token of a letter or two would rewrite ordinary words of the answer, such as its status."""


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


def _finite_or_none(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _sent_token(response: httpx.Response) -> str | None:
    """Return the bearer token the request behind ``response`` carried, if any (downloads carry none)."""
    try:
        header = response.request.headers.get("authorization", "")
    except RuntimeError:  # a response made by hand has no request
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and len(token) >= SECRET_MASK_MIN_LENGTH else None


def _masked(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, SECRET_MASK)
    if isinstance(value, list):
        return [_masked(item, secret) for item in value]
    if isinstance(value, dict):
        return {_masked(key, secret): _masked(item, secret) for key, item in value.items()}
    return value


def read_json(response: httpx.Response) -> Any:
    """
    Return an answer's JSON body, without the API token and without numbers JSON does not have.

    - An answer that repeats the token (``"Invalid token sk-..."``, a debug echo of the request) has it
      replaced by :data:`SECRET_MASK` everywhere, keys included: the body feeds exception messages, trigger
      events, XComs and logs, where the token must never appear.
    - ``NaN``, ``Infinity`` and numbers beyond a float's range are read as null. Python's json accepts them
      although JSON has no such values; carried into an XCom, a trigger event or the metadata database they
      would make Airflow's own serialisation fail, after the video was paid for.

    :param response: the HTTP response (fully read).
    """
    body = response.json(parse_constant=lambda _name: None, parse_float=_finite_or_none)
    secret = _sent_token(response)
    return _masked(body, secret) if secret else body


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
        body: Any = read_json(response)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
        if 200 <= status < 300:
            raise SeedanceMalformedResponseError(
                f"The API's {call} answer{about} was not valid JSON (HTTP {status}).",
                status_code=status,
                request_id=request_id,
            ) from None

    code, message = _error_fields(body)
    # Some RunComfy APIs answer HTTP 200 with an error body: that is an error, not a success. A code of 0 is
    # the common way of saying "no error" (the submit answer reads it the same way).
    if 200 <= status < 300 and code in (None, 0) and isinstance(body, dict):
        return body
    if 200 <= status < 300 and not isinstance(body, dict):
        raise SeedanceMalformedResponseError(
            f"The API's {call} answer{about} was JSON but not an object (HTTP {status}).",
            status_code=status,
            request_id=request_id,
        )

    retry_after = parse_retry_after(response.headers.get("retry-after"))
    # The reason phrase and a redirect's Location are the server's words too: they may repeat the token.
    secret = _sent_token(response)
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
    elif 300 <= status < 400:
        cls, hint = SeedanceAPIError, _redirect_hint(response)
    else:
        cls, hint = SeedanceAPIError, "See the RunComfy error codes documentation."
    full = f"{prefix}: {text}. {hint}"
    return _raise(cls, _masked(full, secret) if secret else full, status, code, request_id, retry_after)


def _redirect_hint(response: httpx.Response) -> str:
    """
    Explain a redirect from the API: it is never followed, since the token must not leave the configured host.

    The target is shown without credentials, query or fragment (they may carry signatures).

    :param response: the 3xx answer.
    """
    location = response.headers.get("location", "").strip()
    try:
        base: httpx.URL | None = response.request.url
    except RuntimeError:  # a response made by hand has no request
        base = None
    try:
        target = (base.join(location) if base is not None else httpx.URL(location)) if location else None
    except httpx.InvalidURL:
        target = None
    never = "redirects are never followed, so the API token never leaves the connection's host"
    if target is None or target.scheme not in ("http", "https") or not target.host:
        shown = "no address" if not location else "an address that is not an http(s) URL"
        return f"The API redirected the call to {shown}; {never}."
    origin = f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")
    return (
        f"The API redirected the call to {origin}{target.path}; {never}. If {origin} is the RunComfy API "
        f"(e.g. http:// moved to https://), set it as the connection's Base URL."
    )


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
            ". The API's TLS certificate is not trusted: behind a private CA or a TLS-inspecting proxy, "
            "point the connection's 'ca_bundle' extra at that CA's PEM file."
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
        body: Any = read_json(response)
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
        shown = short_repr(named)
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


def parse_body(
    model: type[Model],
    data: dict[str, Any],
    call: str,
    request_id: str | None,
    *,
    model_id: str | None = None,
) -> Model:
    """
    Validate an answer's body as ``model``, refusing one about another request (or model) than the one asked.

    A proxy or cache that mixes answers up, or an API bug, must never let this request report another one's
    outcome (and copy someone else's video), nor price a submission at another model's rate: such an answer
    is malformed, so the call is retried and, if it persists, fails naming both ids.

    :param model: the response model.
    :param data: the JSON object of a successful answer.
    :param call: what was called, for messages.
    :param request_id: the request the call was about, if any.
    :param model_id: the model the call was about (the catalog), if any.
    """
    about = f" for request {request_id}" if request_id else f" for model {model_id}" if model_id else ""
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise SeedanceMalformedResponseError(
            f"The API's {call} answer{about} does not have the expected shape: "
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}.",
            request_id=request_id,
        ) from None
    for kind, asked in (("request", request_id), ("model", model_id)):
        named = getattr(parsed, f"{kind}_id", None)
        if asked and isinstance(named, str) and named.strip("/") != asked.strip("/"):
            shown = short_repr(named)
            raise SeedanceMalformedResponseError(
                f"The API's {call} answer{about} is about {kind} {shown}; another {kind}'s answer is never "
                f"used (a proxy or cache between Airflow and the API may be mixing answers up).",
                request_id=request_id,
            )
    return parsed
