"""Opt-in local checks of a first-frame image, from the ``validations`` of the Seedance 1.5 Pro model page.

The model page says the first frame must be 300 to 6000 px wide and high, have a width/height ratio from
0.4 to 2.5, and weigh less than 30 MB. Checking locally before submitting turns a run that would fail at
RunComfy into an immediate, explained error. The check is **never** done by default: it downloads the
image (operators expose it behind a flag such as ``check_image=False``).

How the image is read:

- ``https://`` / ``http://`` URLs: one streamed GET (redirects followed, up to :data:`MAX_REDIRECTS`) that
  stops as soon as :data:`MAX_IMAGE_BYTES` bytes have arrived, so a huge or endless body never fills memory.
  It goes through the provider's download client (:mod:`airflow_provider_seedance.downloads`): **no**
  ``Authorization`` header (the API token must never leave the API host), a URL with ``user:password@`` is
  refused, and so is a host that is or resolves to a link-local or cloud-metadata address, on every redirect
  hop (private networks too when the connection's extra ``allow_private_networks`` is ``false``).
  Transient failures (connect errors, timeouts, 429, 5xx) are retried with the provider's retry policy,
  honouring ``Retry-After``; a 4xx fails at once, since the API would fail to fetch the same URL.
- ``data:image/...;base64,`` URIs are decoded locally under the same size cap.
- The dimensions are read by Pillow from the image header only (``Image.open`` without ``load()``).
  Pillow is the optional extra ``images`` (``pip install 'airflow-provider-seedance[images]'``) and is
  imported only when a check runs.

Size is counted in binary megabytes (30 MB = 30 x 1024 x 1024 bytes), as a browser's ``File.size / 1024 /
1024`` does for the model page's upload form; pass ``max_bytes`` for a stricter cap.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings
from fractions import Fraction
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict

from airflow_provider_seedance import __version__
from airflow_provider_seedance.downloads import new_download_client, url_refusal
from airflow_provider_seedance.exceptions import (
    SeedanceConfigurationError,
    SeedanceConnectionError,
    SeedanceInputError,
    SeedanceRateLimitError,
    SeedanceServerError,
    SeedanceURLRefusedError,
)
from airflow_provider_seedance.hooks.retry import BackoffWait, parse_retry_after, retrying
from airflow_provider_seedance.models import check_media_url, short_repr, unsigned_input

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)

MIN_SIDE_PX = 300
"""Smallest width or height the model accepts, in pixels (inclusive)."""

MAX_SIDE_PX = 6000
"""Largest width or height the model accepts, in pixels (inclusive)."""

MIN_ASPECT_RATIO = 0.4
"""Smallest width/height ratio the model accepts (inclusive)."""

MAX_ASPECT_RATIO = 2.5
"""Largest width/height ratio the model accepts (inclusive)."""

MAX_IMAGE_BYTES = 30 * 1024 * 1024
"""The file must be smaller than this (30 MB); the download stops once this many bytes have arrived."""

DEFAULT_TIMEOUT_SECONDS = 30.0
"""Seconds allowed for connecting and for each read of the image download."""

DOWNLOAD_CHUNK_BYTES = 64 * 1024
"""Read size of the streamed download: the cap is checked after every chunk."""

MAX_REDIRECTS = 5
"""Redirects followed before the URL is declared broken."""

DOWNLOAD_MAX_RETRIES = 2
"""Retries of a download that failed transiently (connect error, timeout, 429, 5xx)."""

DOWNLOAD_RETRY_BACKOFF_SECONDS = 1.0
"""First delay between download attempts (doubled each time, plus jitter)."""

PILLOW_EXTRA = "images"
"""The package extra that installs Pillow."""

DEFAULT_FIELD = "first_frame_image_url"

_USER_AGENT = f"airflow-provider-seedance/{__version__} (image check)"
_MIB = 1024 * 1024


class ImageCheckResult(BaseModel):
    """
    What the check measured on an image that passed it.

    :param source: the image's URL without query string or credentials (a ``data:`` URI is abbreviated).
    :param width: width in pixels.
    :param height: height in pixels.
    :param aspect_ratio: width / height.
    :param size_bytes: the file size in bytes.
    :param format: the image format Pillow recognised (``PNG``, ``JPEG``, ``WEBP``, ``GIF``...).
    :param content_type: the ``Content-Type`` the server (or the ``data:`` URI) declared, if any.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    width: int
    height: int
    aspect_ratio: float
    size_bytes: int
    format: str | None = None
    content_type: str | None = None


def describe_source(url: str) -> str:
    """
    Return a URL fit for logs and errors: no credentials, no query string (pre-signed URLs hide secrets).

    :param url: the image URL or ``data:`` URI.
    """
    text = url.strip()
    if text.startswith("data:"):
        header = text.partition(",")[0]
        return f"{header},... ({len(text)} characters)"
    parts = urlsplit(text)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _load_pillow() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as err:
        raise SeedanceConfigurationError(
            "The first-frame image check needs Pillow, which is not installed. Install the provider's "
            f"'{PILLOW_EXTRA}' extra (pip install 'airflow-provider-seedance[{PILLOW_EXTRA}]') or turn the "
            "image check off."
        ) from err
    return Image


def _input_error(field: str, rule: str, value: str, source: str) -> SeedanceInputError:
    return SeedanceInputError(
        f"Image check failed for {field} (nothing was sent to the API):\n- {field}: {rule} (got {value}; "
        f"image {source})",
        [{"field": field, "rule": rule, "value": value}],
    )


def _size_rule(max_bytes: int) -> str:
    return f"the file must be smaller than {max_bytes / _MIB:g} MB ({max_bytes} bytes)"


def _decode_data_uri(text: str, *, max_bytes: int, field: str) -> tuple[bytes, str | None]:
    header, _, payload = text.partition(",")
    content_type = header.removeprefix("data:").split(";")[0] or None
    payload = "".join(payload.split())
    # Refuse before decoding: base64 carries 3 bytes per 4 characters.
    estimated = len(payload) * 3 // 4 - payload[-2:].count("=")
    if estimated >= max_bytes:
        raise _input_error(
            field, _size_rule(max_bytes), f"{estimated} bytes in the data: URI", describe_source(text)
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _input_error(
            field, "a data: URI must carry valid base64", "undecodable base64", describe_source(text)
        ) from None
    return data, content_type


def _download_once(client: httpx.Client, url: str, *, max_bytes: int, field: str) -> tuple[bytes, str | None]:
    source = describe_source(url)
    try:
        with client.stream("GET", url) as response:
            status = response.status_code
            if status in (408, 429):
                raise SeedanceRateLimitError(
                    f"Downloading {field} ({source}) for the image check got HTTP {status}; try again later.",
                    status_code=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if status >= 500:
                raise SeedanceServerError(
                    f"Downloading {field} ({source}) for the image check got HTTP {status} from the image "
                    "host.",
                    status_code=status,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            if not 200 <= status < 300:
                raise _input_error(
                    field,
                    "the image must be downloadable without login or cookies (the API fetches the same URL)",
                    f"HTTP {status}",
                    source,
                )
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) >= max_bytes:
                raise _input_error(field, _size_rule(max_bytes), f"{int(announced)} bytes announced", source)
            buffer = bytearray()
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                buffer.extend(chunk)
                if len(buffer) >= max_bytes:
                    # Leaving the block closes the connection: the rest of the body is never read.
                    raise _input_error(
                        field,
                        _size_rule(max_bytes),
                        f"at least {len(buffer)} bytes (download stopped)",
                        source,
                    )
            return bytes(buffer), response.headers.get("Content-Type")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as exc:
        raise _input_error(
            field, "the image URL must lead to an http(s) image", f"{type(exc).__name__}: {exc}", source
        ) from None
    except httpx.HTTPError as exc:
        raise SeedanceConnectionError(
            f"Downloading {field} ({source}) for the image check failed in transport: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _download(
    url: str, *, timeout: float, max_bytes: int, max_retries: int, field: str, allow_private_networks: bool
) -> tuple[bytes, str | None]:
    with new_download_client(
        timeout=timeout,
        allow_private_networks=allow_private_networks,
        user_agent=_USER_AGENT,
        max_redirects=MAX_REDIRECTS,
        # identity: Content-Length is then the file size, and no compressed body can expand past the cap.
        headers={"Accept": "image/*", "Accept-Encoding": "identity"},
    ) as client:
        wait = BackoffWait(initial=DOWNLOAD_RETRY_BACKOFF_SECONDS, jitter=DOWNLOAD_RETRY_BACKOFF_SECONDS)
        for attempt in retrying(f"{field} image download", max_retries, wait):
            with attempt:
                return _download_once(client, url, max_bytes=max_bytes, field=field)
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _measure(data: bytes, *, field: str, source: str) -> tuple[int, int, str | None]:
    image_module: Any = _load_pillow()
    with warnings.catch_warnings():
        # Sizes over Pillow's pixel limit only warn; the side-length rule below reports them properly.
        warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
        try:
            with image_module.open(io.BytesIO(data)) as image:
                width, height = image.size
                return int(width), int(height), image.format
        except image_module.DecompressionBombError as err:
            raise _input_error(
                field,
                f"image width and height must be from {MIN_SIDE_PX} to {MAX_SIDE_PX} px",
                f"too many pixels to open: {err}",
                source,
            ) from None
        except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
            raise _input_error(
                field,
                "must be an image file (PNG, JPEG, WebP...)",
                f"{len(data)} bytes Pillow cannot read as an image: {err}",
                source,
            ) from None


def check_first_frame_image(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_retries: int = DOWNLOAD_MAX_RETRIES,
    field: str = DEFAULT_FIELD,
    allow_private_networks: bool = True,
) -> ImageCheckResult:
    """
    Check a first-frame image against the model page's rules: 300-6000 px sides, aspect 0.4-2.5, < 30 MB.

    Downloads the image (streamed, capped at ``max_bytes``, without any ``Authorization`` header, never
    from a link-local address) or decodes a ``data:image/...;base64,`` URI, then reads its size with
    Pillow. Raises :class:`SeedanceInputError` naming ``field``, every rule broken and the measured value
    (:class:`~airflow_provider_seedance.exceptions.SeedanceURLRefusedError` for a refused URL); raises
    :class:`SeedanceConfigurationError` when Pillow is not installed, and a retryable
    :class:`SeedanceConnectionError` / :class:`SeedanceServerError` when the image host stays unreachable.

    :param url: the image's https/http URL or ``data:image/...;base64,`` URI.
    :param timeout: seconds allowed for connecting and for each read.
    :param max_bytes: the file must be smaller than this many bytes; the download stops there.
    :param max_retries: retries of a transiently failed download.
    :param field: the input field the image belongs to, for messages.
    :param allow_private_networks: ``False`` also refuses private-network addresses (loopback stays
        allowed); the operator passes the ``seedance`` connection's extra ``allow_private_networks``.
    """
    try:
        text = check_media_url(url, media="image")
    except ValueError as err:
        shown = short_repr(unsigned_input(url))  # a presigned URL's signature is a credential
        raise SeedanceInputError(
            f"Image check failed for {field} (nothing was sent to the API):\n- {field}: {err} (got {shown})",
            [{"field": field, "rule": str(err), "value": shown}],
        ) from None
    if max_bytes <= 0:
        raise SeedanceConfigurationError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    source = describe_source(text)
    _load_pillow()  # fail on a missing extra before downloading anything

    if text.startswith("data:"):
        data, content_type = _decode_data_uri(text, max_bytes=max_bytes, field=field)
    else:
        rule = url_refusal(text, allow_private_networks=allow_private_networks)
        if rule is not None:
            raise SeedanceURLRefusedError(
                f"Image check failed for {field} (nothing was sent to the API or the image host):\n"
                f"- {field}: {rule} (image {source})",
                [{"field": field, "rule": rule, "value": source}],
            )
        data, content_type = _download(
            text,
            timeout=timeout,
            max_bytes=max_bytes,
            max_retries=max_retries,
            field=field,
            allow_private_networks=allow_private_networks,
        )
    if len(data) >= max_bytes:
        raise _input_error(field, _size_rule(max_bytes), f"{len(data)} bytes", source)

    width, height, image_format = _measure(data, field=field, source=source)
    shape = f"{width}x{height} {image_format or 'image'}"
    errors: list[dict[str, Any]] = []
    side_rule = f"image {{}} must be from {MIN_SIDE_PX} to {MAX_SIDE_PX} px"
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE_PX <= value <= MAX_SIDE_PX:
            errors.append({"field": field, "rule": side_rule.format(name), "value": f"{value} px"})
    aspect = Fraction(width, height) if height else Fraction(0)
    # Exact fractions: 1000x2500 is exactly 0.4 and must pass.
    if not Fraction(str(MIN_ASPECT_RATIO)) <= aspect <= Fraction(str(MAX_ASPECT_RATIO)):
        errors.append(
            {
                "field": field,
                "rule": (
                    f"image aspect ratio (width/height) must be from {MIN_ASPECT_RATIO} to {MAX_ASPECT_RATIO}"
                ),
                "value": f"{float(aspect):.3f} ({width}/{height})",
            }
        )
    if errors:
        lines = "\n".join(f"- {e['field']}: {e['rule']} (got {e['value']})" for e in errors)
        raise SeedanceInputError(
            f"Image check failed for {field} (nothing was sent to the API); image {source}, "
            f"{shape}:\n{lines}",
            errors,
        )

    result = ImageCheckResult(
        source=source,
        width=width,
        height=height,
        aspect_ratio=round(width / height, 6),
        size_bytes=len(data),
        format=image_format,
        content_type=content_type,
    )
    log.info("%s passed the image checks: %s, %d bytes (%s)", field, shape, len(data), source)
    return result


__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_SIDE_PX",
    "MIN_ASPECT_RATIO",
    "MIN_SIDE_PX",
    "PILLOW_EXTRA",
    "ImageCheckResult",
    "check_first_frame_image",
    "describe_source",
]
