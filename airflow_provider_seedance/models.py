"""Data models of the RunComfy Model API and the one place where request statuses are interpreted.

Input models reject unknown fields (a typo must fail loudly, not be ignored by the API); response models
accept unknown keys (the API grows). The status policy (:class:`RequestStatus`), the shape of the
operators' return value (:func:`build_generation_result`) and the trigger event schema
(:class:`SeedanceTriggerEvent`) live here so the operators, the sensor and the trigger share them.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import unicodedata
from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from airflow_provider_seedance.exceptions import SeedanceError, SeedanceInputError

log = logging.getLogger(__name__)

SEEDANCE_1_5_PRO_I2V_MODEL_ID = "bytedance/seedance-v1.5-pro/image-to-video"
"""Model id of ByteDance Seedance 1.5 Pro image-to-video on RunComfy."""

PROMPT_RECOMMENDED_MAX_CHARS = 500
"""The model page recommends prompts under 500 characters; longer ones are sent with a warning."""

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""The shape of a RunComfy request id (the official Python client validates the same)."""

MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
"""A model id: slash-separated segments that go into the URL path unescaped."""

DATA_URI_PATTERN = re.compile(
    r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*);base64,(?P<payload>.*)$", re.DOTALL | re.IGNORECASE
)
"""A base64 ``data:`` URI: media type, optional ``;name=value`` parameters, ``;base64,``, the payload."""

_MEDIA_SUBTYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_BASE64_ALPHABET = re.compile(r"^[A-Za-z0-9+/]*$")
_BASE64_WHITESPACE = re.compile(r"[\t\n\f\r ]+")

SIGNATURE_QUERY_PARAMS = frozenset(
    {
        "signature",  # S3 SigV2, GCS V2, CloudFront, Alibaba OSS V1
        "sig",  # Azure SAS
        "expires",
        "awsaccesskeyid",
        "googleaccessid",
        "ossaccesskeyid",
        "security-token",
        "key-pair-id",  # CloudFront
        "token",  # Firebase Storage download tokens and similar
    }
)
"""Query parameters (lower-cased) that only authorise or time-limit access to a URL, never pick content."""

SIGNATURE_QUERY_PREFIXES = ("x-amz-", "x-goog-", "x-oss-")
"""Prefixes of the query parameters of S3 SigV4, GCS V4 and Alibaba OSS V4 presigned URLs."""

SIGNED_ONLY_QUERY_PARAMS = frozenset(
    {
        # Azure SAS fields: short names that could mean something else in a URL that is not a SAS.
        "sv", "ss", "srt", "sp", "se", "st", "spr", "si", "sr", "sdd", "ses",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
        "policy",  # CloudFront custom policy
    }
)  # fmt: skip
"""Signing parameters removed only when the query also carries a signature (``sig``, ``Signature``...)."""


# ---------------------------------------------------------------------------------------------------------
# Validation helpers shared by every input model
# ---------------------------------------------------------------------------------------------------------


def check_media_url(value: object, *, allow_data_uri: bool = True, media: str = "image") -> str:
    """
    Return ``value`` when it is an absolute http(s) URL with a host (or a ``data:`` URI), else raise.

    :param value: the candidate URL.
    :param allow_data_uri: accept ``data:<media>/...;base64,`` URIs.
    :param media: the media type a ``data:`` URI must carry (``image``, ``video``, ``audio``).
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string URL, got {type(value).__name__}")
    text = value.strip()
    if allow_data_uri and text[:5].lower() == "data:":
        return check_data_uri(text, media=media)
    try:
        parts = urlsplit(text)
    except ValueError as err:  # e.g. a bracketed host that is no IPv6 address
        raise ValueError(f"must be a well-formed URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        accepted = f" or a data:{media}/...;base64, URI" if allow_data_uri else ""
        raise ValueError(f"must be an absolute https:// or http:// URL with a host{accepted}")
    problem = url_problem(text, parts)
    if problem:
        raise ValueError(f"must be a well-formed URL: {problem}")
    return text


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def url_problem(text: str, parts: SplitResult) -> str | None:
    """
    Say what makes an http(s) URL one nobody can fetch (a bad host, port or character), else ``None``.

    An input URL is sent to the API as written, which then fetches it, maybe after the request was billed;
    a transfer's source is fetched by the worker. Either way a host that is no host (``ho st``,
    ``256.1.1.1``, an invisible character), a port out of range or a line break is refused before any HTTP
    call. The path and query are left alone (fetchers percent-encode them), apart from control characters.

    :param text: the URL, stripped.
    :param parts: ``urlsplit(text)``, already known to be http(s) with a host.
    """
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        return "it contains a control character (a line break, tab or NUL); remove it"
    try:
        port = parts.port  # urlsplit only checks the port when it is read
    except ValueError:
        port = 0
    if port == 0:
        # Shown without the user information a netloc may hold.
        written = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        return f"the port {written!r} is not a number from 1 to 65535"
    host = parts.hostname or ""
    if any(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in host):
        return f"the host {host!r} contains a space or an invisible character"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        if ":" in host:
            return f"the host [{host}] is not a valid IPv6 address"
    try:
        name = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return f"the host {host!r} is not a valid internationalised domain name"
    labels = name.removesuffix(".").split(".")
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return f"the host {host!r} is not a valid host name (dot-separated labels of letters, digits and '-')"
    if all(label.isdigit() for label in labels) and not _numeric_ipv4(labels):
        return f"the host {host!r} is not a valid IPv4 address"
    return None


def _numeric_ipv4(labels: list[str]) -> bool:
    """Whether all-digit labels spell an IPv4 address as URL parsers read them (``1.2.3``, ``2852039166``)."""
    if len(labels) > 4:
        return False
    try:
        # A leading 0 makes a part octal (0251 is 169), as in inet_aton and WHATWG URL parsing.
        numbers = [int(label, 8) if len(label) > 1 and label[0] == "0" else int(label) for label in labels]
    except ValueError:  # 08, 09: no octal digit
        return False
    return all(number <= 255 for number in numbers[:-1]) and numbers[-1] < 256 ** (5 - len(numbers))


def check_data_uri(text: str, *, media: str = "image") -> str:
    """
    Return ``text`` when it is a ``data:<media>/<type>;base64,<payload>`` URI with a valid, non-empty payload.

    The payload is checked the way browsers read ``data:`` URLs (WHATWG "forgiving base64"): ASCII
    whitespace is ignored, ``=`` padding is optional, any other character outside the base64 alphabet, or a
    length no base64 text can have, makes it invalid. Nothing is decoded or kept.

    :param text: the candidate URI.
    :param media: the media type it must carry (``image``, ``video``, ``audio``).
    """
    shape = f"a data: URI must look like data:{media}/<type>;base64,<data>"
    match = DATA_URI_PATTERN.match(text)
    if match is None:
        raise ValueError(shape)
    kind, _, subtype = match["type"].partition("/")
    if kind.lower() != media or not _MEDIA_SUBTYPE.match(subtype):
        raise ValueError(shape)
    data = _BASE64_WHITESPACE.sub("", match["payload"])
    if not data.strip("="):
        raise ValueError(f"a data: URI must carry the {media} itself after 'base64,' (the payload is empty)")
    if len(data) % 4 == 0:
        data = data[:-2] if data.endswith("==") else data.removesuffix("=")
    if len(data) % 4 == 1 or not _BASE64_ALPHABET.match(data):
        raise ValueError(
            "a data: URI must carry valid base64 (letters, digits, '+' and '/', at most two '=' of padding, "
            "and a length base64 can have)"
        )
    return text


def unsigned_url(url: str) -> str:
    """
    Return ``url`` without the query parameters that only sign it (presigned S3, GCS, Azure, CloudFront URLs).

    A presigned URL gets a new signature, date and expiry each time it is made: without them, two URLs of
    the same object compare equal. Everything else (scheme, host, path, other parameters, their order and
    encoding) is kept as written, and a URL with nothing to remove is returned unchanged.

    :param url: an http(s) URL (anything else is returned as is).
    """
    if not url[:8].lower().startswith(("https://", "http://")) or "?" not in url:
        return url
    head, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    items = query.split("&")
    names = [unquote(item.partition("=")[0]).strip().lower() for item in items]
    signed = any(name in ("sig", "signature", "x-amz-signature", "x-goog-signature") for name in names)
    kept = [
        item
        for item, name in zip(items, names, strict=True)
        if not (
            name in SIGNATURE_QUERY_PARAMS
            or name.startswith(SIGNATURE_QUERY_PREFIXES)
            or (signed and name in SIGNED_ONLY_QUERY_PARAMS)
        )
    ]
    if len(kept) == len(items):
        return url
    return head + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment


def unsigned_input(value: Any) -> Any:
    """
    Return a copy of a request body (or any JSON value) with :func:`unsigned_url` applied to every URL in it.

    :param value: the JSON value.
    """
    if isinstance(value, str):
        return unsigned_url(value)
    if isinstance(value, Mapping):
        return {key: unsigned_input(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [unsigned_input(item) for item in value]
    return value


def check_prompt(value: object, *, field: str = "prompt") -> str:
    """
    Return a prompt that is a non-empty string; warn (do not fail) above the recommended length.

    :param value: the candidate prompt.
    :param field: the field name used in the warning.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    if len(value) > PROMPT_RECOMMENDED_MAX_CHARS:
        log.warning(
            "%s is %d characters long; the model page recommends fewer than %d for best results. "
            "Sending it anyway.",
            field,
            len(value),
            PROMPT_RECOMMENDED_MAX_CHARS,
        )
    return value


def coerce_int(value: object) -> object:
    """
    Turn integral floats and digit strings (rendered templates) into ``int``; leave the rest for pydantic.

    Booleans and floats with a fraction are rejected outright: ``True`` is not a duration.

    :param value: the candidate value.
    """
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number, not a float with a fraction")
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return value


class SeedanceInputModel(BaseModel):
    """Base class of the typed input models: strict about unknown fields, friendly in its error messages."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    #: Human-readable rule per field, quoted in validation errors.
    FIELD_RULES: ClassVar[dict[str, str]] = {}

    @classmethod
    def validate_input(cls, data: Mapping[str, Any]) -> SeedanceInputModel:
        """
        Return ``data`` as the model, or raise :class:`SeedanceInputError` naming each field and rule.

        :param data: the input fields, as the user wrote them.
        """
        if not isinstance(data, Mapping):
            raise SeedanceInputError(
                f"{cls.__name__}: the input must be a mapping of field names to values, got "
                f"{type(data).__name__}"
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise input_error_from_validation(cls, err) from None

    def to_request_body(self) -> dict[str, Any]:
        """Return the JSON body sent to the API: every field, with its exact key."""
        return self.model_dump(mode="json")


def input_error_from_validation(model: type[BaseModel], err: ValidationError) -> SeedanceInputError:
    """
    Translate a pydantic ``ValidationError`` into a :class:`SeedanceInputError` with one line per field.

    :param model: the model class that failed validation.
    :param err: the pydantic error.
    """
    rules: dict[str, str] = getattr(model, "FIELD_RULES", {})
    allowed = ", ".join(model.model_fields)
    lines: list[str] = []
    errors: list[dict[str, Any]] = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "input"
        top = str(item["loc"][0]) if item["loc"] else ""
        kind = item["type"]
        value = item.get("input")
        if kind == "extra_forbidden":
            rule = f"unknown field; {model.__name__} accepts only: {allowed}"
        elif kind == "missing":
            rule = f"is required ({rules.get(top, 'see the model schema')})"
        else:
            # Our own validators already phrase a rule; pydantic's generic messages are replaced by ours.
            detail = str(item["msg"]).removeprefix("Value error, ")
            rule = detail if kind == "value_error" else rules.get(top, detail)
        # A presigned URL's signature is a credential: the value is shown without it.
        shown = short_repr(unsigned_input(value)) if kind != "missing" else None
        lines.append(f"- {field}: {rule}" + (f" (got {shown})" if shown is not None else ""))
        errors.append({"field": field, "rule": rule, "value": shown})
    message = f"Invalid input for {model.__name__} (nothing was sent to the API):\n" + "\n".join(lines)
    return SeedanceInputError(message, errors)


def short_repr(value: Any, limit: int = 80) -> str:
    """
    Return ``repr(value)``, cut to ``limit`` characters with ``...`` for messages.

    :param value: the value to show.
    :param limit: the most characters shown.
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# Seedance 1.5 Pro image-to-video (the seed's input schema, exactly)
# ---------------------------------------------------------------------------------------------------------

Resolution = Literal["480p", "720p", "1080p"]
Ratio = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]


class SeedanceImageToVideoInput(SeedanceInputModel):
    """
    Input of ``bytedance/seedance-v1.5-pro/image-to-video``, exactly as the model page defines it.

    :param prompt: what happens in the video; non-empty, under 500 characters recommended.
    :param first_frame_image_url: public http(s) URL (or ``data:image/...;base64,`` URI) of the first frame.
    :param resolution: ``480p``, ``720p`` or ``1080p``.
    :param ratio: aspect ratio ``16:9``, ``4:3``, ``1:1``, ``3:4``, ``9:16``, ``21:9`` or ``adaptive``.
    :param duration: length in seconds, an integer from 4 to 12.
    :param generate_audio: generate a soundtrack with the video.
    :param camera_fixed: keep the camera still.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "prompt": "must be a non-empty string (under 500 characters recommended)",
        "first_frame_image_url": "must be an absolute https:// or http:// URL with a host, "
        "or a data:image/...;base64, URI",
        "resolution": "must be one of 480p, 720p, 1080p",
        "ratio": "must be one of 16:9, 4:3, 1:1, 3:4, 9:16, 21:9, adaptive",
        "duration": "must be an integer from 4 to 12 seconds",
        "generate_audio": "must be a boolean (true or false)",
        "camera_fixed": "must be a boolean (true or false)",
    }

    prompt: str
    first_frame_image_url: str
    resolution: Resolution = "480p"
    ratio: Ratio = "adaptive"
    duration: int = Field(default=5, ge=4, le=12, strict=True)
    generate_audio: StrictBool = True
    camera_fixed: StrictBool = True

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: object) -> str:
        return check_prompt(value)

    @field_validator("first_frame_image_url", mode="before")
    @classmethod
    def _image(cls, value: object) -> str:
        return check_media_url(value, media="image")

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return coerce_int(value)

    @field_validator("resolution", "ratio", mode="before")
    @classmethod
    def _strip_enum(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------------------
# Responses (tolerant of unknown keys)
# ---------------------------------------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _informational_number(value: object, handler: ValidatorFunctionWrapHandler) -> Any:
    """
    Read a number that only informs (a queue position, a cost): ``None`` unless it is finite and >= 0.

    An odd value there (``"n/a"``, ``2.5`` for a position, ``-1``, ``true``) must not turn a good answer into
    a failed poll, nor fail a task whose video was generated and paid for.

    :param value: the value in the answer.
    :param handler: pydantic's own validation of the field's type.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = handler(value)
    except ValidationError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


class SubmitResponse(_Response):
    """Answer of ``POST /v1/models/{model_id}``."""

    request_id: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, value: str) -> str:
        if not REQUEST_ID_PATTERN.match(value):
            raise ValueError("request_id must match [A-Za-z0-9_-]{1,128}")
        return value


class StatusResponse(_Response):
    """Answer of ``GET /v1/requests/{request_id}/status``."""

    request_id: str | None = None
    status: str
    queue_position: int | None = None
    status_url: str | None = None
    result_url: str | None = None

    _queue_position = field_validator("queue_position", mode="wrap")(_informational_number)

    @property
    def state(self) -> RequestStatus:
        """The status, interpreted by the shared policy."""
        return RequestStatus.parse(self.status)


class ResultResponse(_Response):
    """Answer of ``GET /v1/requests/{request_id}/result``."""

    request_id: str | None = None
    status: str
    output: dict[str, Any] | None = None
    created_at: Any = None
    finished_at: Any = None
    error: Any = None
    failure_reason: Any = None
    cost: float | None = None

    _cost = field_validator("cost", mode="wrap")(_informational_number)

    @property
    def state(self) -> RequestStatus:
        """The status, interpreted by the shared policy."""
        return RequestStatus.parse(self.status)

    @property
    def error_text(self) -> str:
        """The API's explanation of a failure, as one line of text (may be empty)."""
        return describe_error(self.error) or describe_error(self.failure_reason)

    @property
    def succeeded(self) -> bool:
        """
        Whether the run succeeded: the one success rule of the operators, sensor, trigger and transfers.

        ``succeeded`` is success; so is ``completed`` with an output and no error (the API's docs show
        ``completed`` for every finished run). Anything else, an unfamiliar status included, is not.
        """
        state = self.state
        if state is RequestStatus.SUCCEEDED:
            return True
        return state is RequestStatus.COMPLETED and bool(self.output) and not self.error_text


class CancelResponse(_Response):
    """Answer of ``POST /v1/requests/{request_id}/cancel``; ``outcome`` is what to trust."""

    request_id: str | None = None
    status: str | None = None
    outcome: str | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the API says the request was cancelled (only queued requests can be)."""
        return (self.outcome or "").lower() == "cancelled"


class ModelInfo(_Response):
    """Answer of ``GET /v1/models/{model_id}``, the catalog (undocumented; the official CLI uses it)."""

    model_id: str | None = None
    display_name: str | None = None
    base_price_usd: float | None = None
    price_unit: str | None = None


def describe_error(error: Any) -> str:
    """
    Render an API error value (a string, an object or a list) as one line of text.

    :param error: the ``error`` / ``failure_reason`` / ``detail`` value of a response.
    """
    if error is None or error == "":
        return ""
    if isinstance(error, str):
        return error.strip()
    if isinstance(error, Mapping):
        for key in ("error_message", "message", "detail", "error", "reason", "msg"):
            if error.get(key):
                text = describe_error(error[key])
                code = error.get("error_code") or error.get("code")
                return f"{text} (code {code})" if code and text else text
        return ", ".join(f"{k}={v}" for k, v in error.items())
    if isinstance(error, (list, tuple)):
        return "; ".join(filter(None, (describe_error(e) for e in error)))
    return str(error)


# ---------------------------------------------------------------------------------------------------------
# The status policy
# ---------------------------------------------------------------------------------------------------------


class RequestStatus(str, Enum):
    """
    The state of a generation request, as the /status and /result endpoints report it.

    /status says ``completed`` for every finished run; /result is the final word on whether it
    ``succeeded`` or ``failed``. Values this provider does not know map to ``UNKNOWN``, which is never
    taken as success.
    """

    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> RequestStatus:
        """
        Map an API status string to a member; anything unrecognised becomes ``UNKNOWN``.

        :param value: the raw status value.
        """
        text = str(value or "").strip().lower().replace("-", "_").replace(" ", "_")
        return _STATUS_ALIASES.get(text, cls.UNKNOWN)

    def is_active(self) -> bool:
        """Whether the request is still queued or running (a retry may re-attach to it)."""
        return self in (RequestStatus.IN_QUEUE, RequestStatus.IN_PROGRESS)

    def is_failure(self) -> bool:
        """Whether the run ended without a video (failed or cancelled)."""
        return self in (RequestStatus.FAILED, RequestStatus.CANCELLED)


_STATUS_ALIASES: dict[str, RequestStatus] = {
    "in_queue": RequestStatus.IN_QUEUE,
    "queued": RequestStatus.IN_QUEUE,
    "pending": RequestStatus.IN_QUEUE,
    "in_progress": RequestStatus.IN_PROGRESS,
    "running": RequestStatus.IN_PROGRESS,
    "processing": RequestStatus.IN_PROGRESS,
    "completed": RequestStatus.COMPLETED,
    "succeeded": RequestStatus.SUCCEEDED,
    "success": RequestStatus.SUCCEEDED,
    "failed": RequestStatus.FAILED,
    "failure": RequestStatus.FAILED,
    "error": RequestStatus.FAILED,
    "cancelled": RequestStatus.CANCELLED,
    "canceled": RequestStatus.CANCELLED,
}


# ---------------------------------------------------------------------------------------------------------
# What the operators return, and what the trigger sends back
# ---------------------------------------------------------------------------------------------------------


def output_video_urls(output: Mapping[str, Any] | None) -> list[str]:
    """
    Return every video URL of a result's ``output`` in output order (``video`` first, then ``videos``).

    :param output: the ``output`` object of a succeeded result.
    """
    return _urls(output, "video", "videos")


def output_image_urls(output: Mapping[str, Any] | None) -> list[str]:
    """
    Return every image URL of a result's ``output`` in output order (``image`` first, then ``images``).

    :param output: the ``output`` object of a succeeded result.
    """
    return _urls(output, "image", "images")


def _urls(output: Mapping[str, Any] | None, single: str, many: str) -> list[str]:
    if not output:
        return []
    urls: list[str] = []
    first = output.get(single)
    if isinstance(first, str) and first:
        urls.append(first)
    listed = output.get(many)
    if isinstance(listed, (list, tuple)):
        urls.extend(u for u in listed if isinstance(u, str) and u and u not in urls)
    return urls


def build_generation_result(
    *, request_id: str, model_id: str | None, result: ResultResponse | Mapping[str, Any]
) -> dict[str, Any]:
    """
    Build the operators' and the sensor's return value (XCom ``return_value``) from a succeeded result.

    :param request_id: the request id.
    :param model_id: the model the request ran (``None`` when unknown, e.g. for the sensor).
    :param result: the /result answer.
    """
    parsed = result if isinstance(result, ResultResponse) else ResultResponse.model_validate(dict(result))
    output = dict(parsed.output or {})
    videos = output_video_urls(output)
    return {
        "request_id": request_id,
        "model_id": model_id,
        "status": RequestStatus.SUCCEEDED.value,
        "video_url": videos[0] if videos else None,
        "video_urls": videos,
        "image_urls": output_image_urls(output),
        "output": output,
        "cost": parsed.cost,
    }


EventStatus = Literal["succeeded", "failed", "cancelled", "timeout", "error"]


class SeedanceTriggerEvent(BaseModel):
    """
    The payload of the one event a ``SeedanceRequestTrigger`` yields.

    :param status: how the wait ended.
    :param request_id: the request waited for.
    :param result: the /result answer (as a dict) when one was read, else ``None``.
    :param message: a human-readable explanation.
    """

    model_config = ConfigDict(extra="forbid")

    status: EventStatus
    request_id: str
    result: dict[str, Any] | None = None
    message: str = ""

    @classmethod
    def parse(cls, event: object, *, expected_request_id: str | None = None) -> SeedanceTriggerEvent:
        """
        Validate a trigger event payload, raising :class:`SeedanceError` when it is not one of ours.

        :param event: the payload handed to ``execute_complete``.
        :param expected_request_id: when given, the event must be about this request.
        """
        try:
            parsed = cls.model_validate(event)
        except ValidationError as err:
            raise SeedanceError(
                f"Received a malformed Seedance trigger event ({short_repr(event, 200)}): "
                f"{err.errors()[0]['msg']}"
            ) from None
        if expected_request_id and parsed.request_id != expected_request_id:
            raise SeedanceError(
                f"Received a trigger event for request {parsed.request_id!r} while waiting for "
                f"{expected_request_id!r}; refusing to use it."
            )
        return parsed


__all__ = [
    "MODEL_ID_PATTERN",
    "REQUEST_ID_PATTERN",
    "SEEDANCE_1_5_PRO_I2V_MODEL_ID",
    "CancelResponse",
    "ModelInfo",
    "RequestStatus",
    "ResultResponse",
    "SeedanceImageToVideoInput",
    "SeedanceInputModel",
    "SeedanceTriggerEvent",
    "StatusResponse",
    "SubmitResponse",
    "output_image_urls",
    "output_video_urls",
]
