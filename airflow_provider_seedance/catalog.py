"""Typed input models for the other ByteDance Seedance models on RunComfy, and a registry of them all.

The seed model (Seedance 1.5 Pro image-to-video,
:class:`~airflow_provider_seedance.models.SeedanceImageToVideoInput`) has a schema published on its model page
and sends every field, defaults included. The schemas here come from the other models' pages and are *less
certain* (see ``api-contract.md``), so their request bodies carry **only the fields the user set**
(``model_dump(exclude_unset=True)``): a default we believe in but the API does not accept is never sent on the
user's behalf, and the API applies its own defaults instead. The documented defaults are still kept on the
models, so :func:`duration_seconds` can price a request that leaves ``duration`` out. ``None`` means "not
given" for every field of these models, so an operator preset can pass its unset arguments straight through.

Unknown fields are rejected, like the seed model does: a typo must fail before anything is paid for. For a
field this catalog does not know, use
:class:`~airflow_provider_seedance.operators.seedance.SeedanceSubmitOperator` with a free-form ``input`` dict,
which is sent as written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, StrictBool, field_validator, model_validator

from airflow_provider_seedance.exceptions import SeedanceInputError
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    SeedanceImageToVideoInput,
    SeedanceInputModel,
    check_media_url,
    check_prompt,
    coerce_int,
)

# ---------------------------------------------------------------------------------------------------------
# Model ids
# ---------------------------------------------------------------------------------------------------------

SEEDANCE_1_LITE_I2V_MODEL_ID = "bytedance/seedance-1-0/lite/image-to-video"
"""Seedance 1.0 Lite image-to-video."""

SEEDANCE_1_LITE_R2V_MODEL_ID = "bytedance/seedance-1-0/lite/reference-to-video"
"""Seedance 1.0 Lite reference-to-video."""

SEEDANCE_1_PRO_FAST_T2V_MODEL_ID = "bytedance/seedance-1-0/pro/fast/text-to-video"
"""Seedance 1.0 Pro Fast text-to-video."""

SEEDANCE_2_PRO_MODEL_ID = "bytedance/seedance-v2/pro"
"""Seedance 2.0 Pro (text, reference images, video and audio to video)."""

SEEDANCE_2_5_I2V_MODEL_IDS: dict[str, str] = {
    tier: f"bytedance/seedance-2.5/image-to-video/{tier}" for tier in ("480p", "720p", "1080p", "4k")
}
"""Seedance 2.5 image-to-video, one model id per output resolution."""

SEEDANCE_2_5_T2V_MODEL_IDS: dict[str, str] = {
    tier: f"bytedance/seedance-2.5/text-to-video/{tier}" for tier in ("1080p", "4k")
}
"""Seedance 2.5 text-to-video, one model id per output resolution."""

# ---------------------------------------------------------------------------------------------------------
# Limits from the model pages
# ---------------------------------------------------------------------------------------------------------

SEEDANCE_2_PRO_MAX_IMAGES = 9
SEEDANCE_2_PRO_MAX_VIDEOS = 3
SEEDANCE_2_PRO_MAX_AUDIOS = 3
SEEDANCE_2_PRO_MIN_DURATION, SEEDANCE_2_PRO_MAX_DURATION = 4, 15
SEEDANCE_2_5_MIN_DURATION, SEEDANCE_2_5_MAX_DURATION = 4, 30
DEFAULT_DURATION_SECONDS = 5
"""The default video length the Seedance model pages document (where they document one)."""

AspectRatio = Literal["adaptive", "16:9", "9:16", "4:3", "3:4", "1:1", "21:9"]
_ASPECT_RATIOS = "adaptive, 16:9, 9:16, 4:3, 3:4, 1:1, 21:9"
_BOOL_RULE = "must be a boolean (true or false)"


# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


def _url_list(value: object) -> object:
    # A single URL (e.g. a rendered template) is taken as a one-item list; anything else is left to pydantic.
    return [value] if isinstance(value, str) else value


def _image_url(value: object) -> str:
    return check_media_url(value, media="image")


def _hosted_url(value: object) -> str:
    # Clips and sound tracks are fetched by the API from a public URL; inline data: URIs of that size are
    # not documented for these fields, so they are refused here rather than risked.
    return check_media_url(value, allow_data_uri=False)


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


ImageURL = Annotated[str, BeforeValidator(_image_url)]
HostedURL = Annotated[str, BeforeValidator(_hosted_url)]
Duration = Annotated[int, BeforeValidator(coerce_int)]


class SparseSeedanceInputModel(SeedanceInputModel):
    """
    Base of the models whose schema is less certain than the seed's: the body holds only the fields set.

    A value of ``None`` counts as "not given" (it is neither validated nor sent), so operator presets can
    forward optional arguments without knowing which ones the user set.
    """

    @model_validator(mode="before")
    @classmethod
    def _drop_none(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data

    def to_request_body(self) -> dict[str, Any]:
        """Return the JSON body sent to the API: only the fields the user set, with their exact keys."""
        return self.model_dump(mode="json", exclude_unset=True)


# ---------------------------------------------------------------------------------------------------------
# Seedance 1.0
# ---------------------------------------------------------------------------------------------------------


class Seedance1LiteImageToVideoInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-1-0/lite/image-to-video``.

    :param prompt: what happens in the video; non-empty.
    :param first_frame_image_url: public http(s) URL (or ``data:image/...;base64,`` URI) of the first frame.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "prompt": "must be a non-empty string (under 500 characters recommended)",
        "first_frame_image_url": "must be an absolute https:// or http:// URL with a host, "
        "or a data:image/...;base64, URI",
    }

    prompt: str
    first_frame_image_url: ImageURL

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: object) -> str:
        return check_prompt(value)


class Seedance1LiteReferenceToVideoInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-1-0/lite/reference-to-video``: note the prompt field is ``text``.

    :param text: what happens in the video; non-empty.
    :param images: one or more reference images, each a public http(s) URL or ``data:image/...;base64,`` URI.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "text": "must be a non-empty string (the prompt; this model calls it text)",
        "images": "must be a non-empty list of image URLs (https:// or http://, or data:image/...;base64,)",
    }

    text: str
    images: Annotated[list[ImageURL], BeforeValidator(_url_list), Field(min_length=1)]

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: object) -> str:
        return check_prompt(value, field="text")


class Seedance1ProFastTextToVideoInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-1-0/pro/fast/text-to-video``: note the prompt field is ``text``.

    :param text: what happens in the video; non-empty.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "text": "must be a non-empty string (the prompt; this model calls it text)",
    }

    text: str

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: object) -> str:
        return check_prompt(value, field="text")


# ---------------------------------------------------------------------------------------------------------
# Seedance 2.0 Pro
# ---------------------------------------------------------------------------------------------------------


class Seedance2ProInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-v2/pro``: a prompt plus optional reference images, clips and sound.

    :param prompt: what happens in the video; non-empty.
    :param image_url: up to 9 reference images (http(s) URLs or ``data:image/...;base64,`` URIs).
    :param video_url: up to 3 reference clips by public http(s) URL (the page asks for 2-15 s each).
    :param audio_url: up to 3 audio tracks by public http(s) URL (the page asks for 2-15 s, < 15 MB each).
    :param aspect_ratio: ``adaptive`` (default), ``16:9``, ``9:16``, ``4:3``, ``3:4``, ``1:1`` or ``21:9``.
    :param duration: length in seconds, an integer from 4 to 15 (default 5).
    :param resolution: ``480p`` or ``720p`` (default ``720p``).
    :param generate_audio: generate a soundtrack (default true).
    :param seed: an integer seed for reproducible results.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "prompt": "must be a non-empty string (under 500 characters recommended)",
        "image_url": f"must be a list of at most {SEEDANCE_2_PRO_MAX_IMAGES} image URLs "
        "(https:// or http://, or data:image/...;base64,)",
        "video_url": f"must be a list of at most {SEEDANCE_2_PRO_MAX_VIDEOS} video URLs (https:// or http://)",
        "audio_url": f"must be a list of at most {SEEDANCE_2_PRO_MAX_AUDIOS} audio URLs (https:// or http://)",
        "aspect_ratio": f"must be one of {_ASPECT_RATIOS}",
        "duration": f"must be an integer from {SEEDANCE_2_PRO_MIN_DURATION} to "
        f"{SEEDANCE_2_PRO_MAX_DURATION} seconds",
        "resolution": "must be one of 480p, 720p",
        "generate_audio": _BOOL_RULE,
        "seed": "must be an integer",
    }

    prompt: str
    image_url: Annotated[
        list[ImageURL], BeforeValidator(_url_list), Field(max_length=SEEDANCE_2_PRO_MAX_IMAGES)
    ] = Field(default_factory=list)
    video_url: Annotated[
        list[HostedURL], BeforeValidator(_url_list), Field(max_length=SEEDANCE_2_PRO_MAX_VIDEOS)
    ] = Field(default_factory=list)
    audio_url: Annotated[
        list[HostedURL], BeforeValidator(_url_list), Field(max_length=SEEDANCE_2_PRO_MAX_AUDIOS)
    ] = Field(default_factory=list)
    aspect_ratio: Annotated[AspectRatio, BeforeValidator(_strip)] = "adaptive"
    duration: Annotated[
        Duration, Field(ge=SEEDANCE_2_PRO_MIN_DURATION, le=SEEDANCE_2_PRO_MAX_DURATION, strict=True)
    ] = DEFAULT_DURATION_SECONDS
    resolution: Annotated[Literal["480p", "720p"], BeforeValidator(_strip)] = "720p"
    generate_audio: StrictBool = True
    seed: Annotated[int, BeforeValidator(coerce_int), Field(strict=True)] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: object) -> str:
        return check_prompt(value)


# ---------------------------------------------------------------------------------------------------------
# Seedance 2.5
# ---------------------------------------------------------------------------------------------------------

_2_5_DURATION_RULE = (
    f"must be an integer from {SEEDANCE_2_5_MIN_DURATION} to {SEEDANCE_2_5_MAX_DURATION} seconds"
)


class Seedance25ImageToVideoInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-2.5/image-to-video/{480p,720p,1080p,4k}`` (the resolution is in the id).

    :param prompt: what happens in the video; non-empty.
    :param image: the starting image, a public http(s) URL or a ``data:image/...;base64,`` URI.
    :param duration: length in seconds, an integer from 4 to 30 (default 5).
    :param generate_audio: generate a soundtrack (default true).
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "prompt": "must be a non-empty string (under 500 characters recommended)",
        "image": "must be an absolute https:// or http:// URL with a host, or a data:image/...;base64, URI",
        "duration": _2_5_DURATION_RULE,
        "generate_audio": _BOOL_RULE,
    }

    prompt: str
    image: ImageURL
    duration: Annotated[
        Duration, Field(ge=SEEDANCE_2_5_MIN_DURATION, le=SEEDANCE_2_5_MAX_DURATION, strict=True)
    ] = DEFAULT_DURATION_SECONDS
    generate_audio: StrictBool = True

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: object) -> str:
        return check_prompt(value)


class Seedance25TextToVideoInput(SparseSeedanceInputModel):
    """
    Input of ``bytedance/seedance-2.5/text-to-video/{1080p,4k}`` (the resolution is in the id).

    The model page documents no default for ``duration`` or ``generate_audio``: left out, the API decides,
    and the cost guard cannot price a per-second model without a ``duration``.

    :param prompt: what happens in the video; non-empty.
    :param aspect_ratio: ``16:9`` (default), ``9:16``, ``1:1``, ``4:3``, ``3:4``, ``21:9`` or ``adaptive``.
    :param duration: length in seconds, an integer from 4 to 30.
    :param generate_audio: generate a soundtrack.
    """

    FIELD_RULES: ClassVar[dict[str, str]] = {
        "prompt": "must be a non-empty string (under 500 characters recommended)",
        "aspect_ratio": f"must be one of {_ASPECT_RATIOS}",
        "duration": _2_5_DURATION_RULE,
        "generate_audio": _BOOL_RULE,
    }

    prompt: str
    aspect_ratio: Annotated[AspectRatio, BeforeValidator(_strip)] = "16:9"
    duration: (
        Annotated[Duration, Field(ge=SEEDANCE_2_5_MIN_DURATION, le=SEEDANCE_2_5_MAX_DURATION, strict=True)]
        | None
    ) = None
    generate_audio: StrictBool | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: object) -> str:
        return check_prompt(value)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

INPUT_MODELS: dict[str, type[SeedanceInputModel]] = {
    SEEDANCE_1_5_PRO_I2V_MODEL_ID: SeedanceImageToVideoInput,
    SEEDANCE_1_LITE_I2V_MODEL_ID: Seedance1LiteImageToVideoInput,
    SEEDANCE_1_LITE_R2V_MODEL_ID: Seedance1LiteReferenceToVideoInput,
    SEEDANCE_1_PRO_FAST_T2V_MODEL_ID: Seedance1ProFastTextToVideoInput,
    SEEDANCE_2_PRO_MODEL_ID: Seedance2ProInput,
    **{model_id: Seedance25ImageToVideoInput for model_id in SEEDANCE_2_5_I2V_MODEL_IDS.values()},
    **{model_id: Seedance25TextToVideoInput for model_id in SEEDANCE_2_5_T2V_MODEL_IDS.values()},
}
"""Every Seedance model id on RunComfy with a typed input model, mapped to that model."""


def _normalize_model_id(model_id: object) -> str:
    return model_id.strip().strip("/") if isinstance(model_id, str) else ""


def input_model_for(model_id: str) -> type[SeedanceInputModel] | None:
    """
    Return the typed input model of a RunComfy model id, or ``None`` when the catalog has none for it.

    :param model_id: the RunComfy model id, e.g. ``bytedance/seedance-v2/pro``.
    """
    return INPUT_MODELS.get(_normalize_model_id(model_id))


def validate_request_body(model_id: str, data: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """
    Validate an input against the typed model of ``model_id`` and return the JSON body to submit.

    A model id the catalog does not know gets its input back unchanged (as a plain dict), because the
    catalog cannot judge it. Raises :class:`SeedanceInputError` naming each bad field and its rule.

    :param model_id: the RunComfy model id.
    :param data: the input fields (a mapping, or an already-validated input model).
    """
    model = input_model_for(model_id)
    if isinstance(data, SeedanceInputModel):
        if model is not None and not isinstance(data, model):
            raise SeedanceInputError(
                f"input: a {type(data).__name__} cannot be sent to {model_id}, which takes {model.__name__}."
            )
        return data.to_request_body()
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", exclude_unset=True)
    if model is None:
        if not isinstance(data, Mapping):
            raise SeedanceInputError(
                f"input: must be a mapping of the model's input fields, got {type(data).__name__}"
            )
        return dict(data)
    return model.validate_input(data).to_request_body()


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number > 0 else None


def duration_seconds(model_id: str, body: Mapping[str, Any]) -> float | None:
    """
    Return the length in seconds of the video a request will produce, or ``None`` when it cannot be known.

    The body's ``duration`` wins; without one, the documented default of the model's typed input model is
    used. A model without a typed model and without ``duration`` in its body gives ``None``.

    :param model_id: the RunComfy model id.
    :param body: the JSON body that will be submitted.
    """
    if isinstance(body, Mapping) and body.get("duration") is not None:
        return _seconds(body["duration"])
    model = input_model_for(model_id)
    if model is None:
        return None
    field = model.model_fields.get("duration")
    if field is None or field.default is None:
        return None
    return _seconds(field.default)


__all__ = [
    "DEFAULT_DURATION_SECONDS",
    "INPUT_MODELS",
    "SEEDANCE_1_LITE_I2V_MODEL_ID",
    "SEEDANCE_1_LITE_R2V_MODEL_ID",
    "SEEDANCE_1_PRO_FAST_T2V_MODEL_ID",
    "SEEDANCE_2_5_I2V_MODEL_IDS",
    "SEEDANCE_2_5_T2V_MODEL_IDS",
    "SEEDANCE_2_PRO_MODEL_ID",
    "Seedance1LiteImageToVideoInput",
    "Seedance1LiteReferenceToVideoInput",
    "Seedance1ProFastTextToVideoInput",
    "Seedance2ProInput",
    "Seedance25ImageToVideoInput",
    "Seedance25TextToVideoInput",
    "SparseSeedanceInputModel",
    "duration_seconds",
    "input_model_for",
    "validate_request_body",
]
