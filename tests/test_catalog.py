"""The typed input models of the other Seedance models: exact bodies, friendly errors, the registry."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_seedance.catalog import (
    INPUT_MODELS,
    SEEDANCE_1_LITE_I2V_MODEL_ID,
    SEEDANCE_1_LITE_R2V_MODEL_ID,
    SEEDANCE_1_PRO_FAST_T2V_MODEL_ID,
    SEEDANCE_2_5_I2V_MODEL_IDS,
    SEEDANCE_2_5_T2V_MODEL_IDS,
    SEEDANCE_2_PRO_MODEL_ID,
    Seedance1LiteImageToVideoInput,
    Seedance1LiteReferenceToVideoInput,
    Seedance1ProFastTextToVideoInput,
    Seedance2ProInput,
    Seedance25ImageToVideoInput,
    Seedance25TextToVideoInput,
    SparseSeedanceInputModel,
    duration_seconds,
    input_model_for,
    validate_request_body,
)
from airflow_provider_seedance.exceptions import SeedanceCostLimitError, SeedanceInputError
from airflow_provider_seedance.models import (
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    SeedanceImageToVideoInput,
    SeedanceInputModel,
)
from airflow_provider_seedance.operators.seedance import SeedanceSubmitOperator, SeedanceV2ProOperator
from tests._generation import STUCK
from tests.operators._dag_support import IMAGE, FakeTaskStateStore, make_context

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

IMG = "https://cdn.example.com/frames/first.png"
IMG2 = "https://cdn.example.com/frames/second.jpg"
DATA_IMG = "data:image/png;base64,iVBORw0KGgo="
CLIP = "https://cdn.example.com/clips/ref.mp4"
SONG = "https://cdn.example.com/audio/track.mp3"

ALL_MODEL_IDS = sorted(INPUT_MODELS)

# (model class, user input, the exact JSON body that must be sent)
ROUND_TRIPS: list[tuple[type[SeedanceInputModel], dict[str, Any], dict[str, Any]]] = [
    (
        Seedance1LiteImageToVideoInput,
        {"prompt": "A cat walks", "first_frame_image_url": IMG},
        {"prompt": "A cat walks", "first_frame_image_url": IMG},
    ),
    (
        Seedance1LiteImageToVideoInput,
        {"prompt": "A cat walks", "first_frame_image_url": DATA_IMG},
        {"prompt": "A cat walks", "first_frame_image_url": DATA_IMG},
    ),
    (
        Seedance1LiteReferenceToVideoInput,
        {"text": "Two friends wave", "images": [IMG, DATA_IMG]},
        {"text": "Two friends wave", "images": [IMG, DATA_IMG]},
    ),
    (
        Seedance1LiteReferenceToVideoInput,
        {"text": "Two friends wave", "images": IMG},
        {"text": "Two friends wave", "images": [IMG]},
    ),
    (
        Seedance1ProFastTextToVideoInput,
        {"text": "A drone flies over hills"},
        {"text": "A drone flies over hills"},
    ),
    (Seedance2ProInput, {"prompt": "Dance"}, {"prompt": "Dance"}),
    (
        Seedance2ProInput,
        {
            "prompt": "Dance",
            "image_url": [IMG, IMG2, DATA_IMG],
            "video_url": [CLIP],
            "audio_url": SONG,
            "aspect_ratio": " 9:16 ",
            "duration": "15",
            "resolution": "480p",
            "generate_audio": False,
            "seed": 42.0,
        },
        {
            "prompt": "Dance",
            "image_url": [IMG, IMG2, DATA_IMG],
            "video_url": [CLIP],
            "audio_url": [SONG],
            "aspect_ratio": "9:16",
            "duration": 15,
            "resolution": "480p",
            "generate_audio": False,
            "seed": 42,
        },
    ),
    (
        Seedance2ProInput,
        {"prompt": "Dance", "image_url": [], "duration": 5, "seed": None, "resolution": None},
        {"prompt": "Dance", "image_url": [], "duration": 5},
    ),
    (
        Seedance25ImageToVideoInput,
        {"prompt": "Waves", "image": IMG},
        {"prompt": "Waves", "image": IMG},
    ),
    (
        Seedance25ImageToVideoInput,
        {"prompt": "Waves", "image": DATA_IMG, "duration": 30, "generate_audio": True},
        {"prompt": "Waves", "image": DATA_IMG, "duration": 30, "generate_audio": True},
    ),
    (Seedance25TextToVideoInput, {"prompt": "City at night"}, {"prompt": "City at night"}),
    (
        Seedance25TextToVideoInput,
        {"prompt": "City at night", "aspect_ratio": "21:9", "duration": 4, "generate_audio": False},
        {"prompt": "City at night", "aspect_ratio": "21:9", "duration": 4, "generate_audio": False},
    ),
]


@pytest.mark.parametrize(("model", "data", "body"), ROUND_TRIPS)
def test_valid_input_round_trips_to_the_exact_body(
    model: type[SeedanceInputModel], data: dict[str, Any], body: dict[str, Any]
) -> None:
    sent = model.validate_input(data).to_request_body()
    assert sent == body
    # Exactly these keys and JSON types, in a body json.dumps can write.
    assert json.loads(json.dumps(sent)) == body


def test_less_certain_models_send_only_what_the_user_set() -> None:
    model = Seedance2ProInput.validate_input({"prompt": "Dance"})
    assert isinstance(model, Seedance2ProInput)
    # The documented defaults are known to the model...
    assert (model.aspect_ratio, model.duration, model.resolution, model.generate_audio) == (
        "adaptive",
        5,
        "720p",
        True,
    )
    assert (model.image_url, model.video_url, model.audio_url, model.seed) == ([], [], [], None)
    # ...but never sent on the user's behalf.
    assert model.to_request_body() == {"prompt": "Dance"}
    i2v = Seedance25ImageToVideoInput.validate_input({"prompt": "p", "image": IMG})
    assert isinstance(i2v, Seedance25ImageToVideoInput)
    assert i2v.duration == 5
    t2v = Seedance25TextToVideoInput.validate_input({"prompt": "p"})
    assert isinstance(t2v, Seedance25TextToVideoInput)
    assert (t2v.aspect_ratio, t2v.duration, t2v.generate_audio) == ("16:9", None, None)


def test_seed_model_still_sends_every_field() -> None:
    body = validate_request_body(SEEDANCE_1_5_PRO_I2V_MODEL_ID, {"prompt": "p", "first_frame_image_url": IMG})
    assert body == {
        "prompt": "p",
        "first_frame_image_url": IMG,
        "resolution": "480p",
        "ratio": "adaptive",
        "duration": 5,
        "generate_audio": True,
        "camera_fixed": True,
    }


def test_every_catalog_model_is_strict_and_sparse() -> None:
    for model_id, model in INPUT_MODELS.items():
        assert issubclass(model, SeedanceInputModel), model_id
        assert model.model_config.get("extra") == "forbid", model_id
        assert set(model.FIELD_RULES) == set(model.model_fields), model_id
        if model is not SeedanceImageToVideoInput:
            assert issubclass(model, SparseSeedanceInputModel), model_id


# (model, bad input, field named in the error, words of the rule)
BAD_INPUTS: list[tuple[type[SeedanceInputModel], dict[str, Any], str, str]] = [
    (Seedance1LiteImageToVideoInput, {"first_frame_image_url": IMG}, "prompt", "is required"),
    (Seedance1LiteImageToVideoInput, {"prompt": "  ", "first_frame_image_url": IMG}, "prompt", "empty"),
    (
        Seedance1LiteImageToVideoInput,
        {"prompt": "p", "first_frame_image_url": "ftp://host/a.png"},
        "first_frame_image_url",
        "https:// or http:// URL",
    ),
    (
        Seedance1LiteImageToVideoInput,
        {"prompt": "p", "first_frame_image_url": "data:text/plain;base64,QQ=="},
        "first_frame_image_url",
        "data:image/",
    ),
    (Seedance1LiteReferenceToVideoInput, {"text": "t"}, "images", "non-empty list of image URLs"),
    (Seedance1LiteReferenceToVideoInput, {"text": "t", "images": []}, "images", "non-empty list"),
    (Seedance1LiteReferenceToVideoInput, {"text": "t", "images": [IMG, "/local.png"]}, "images.1", "URL"),
    (Seedance1LiteReferenceToVideoInput, {"images": [IMG]}, "text", "is required"),
    (Seedance1ProFastTextToVideoInput, {"text": 12}, "text", "must be a string"),
    (Seedance1ProFastTextToVideoInput, {}, "text", "is required"),
    (Seedance2ProInput, {}, "prompt", "is required"),
    (Seedance2ProInput, {"prompt": "p", "image_url": [IMG] * 10}, "image_url", "at most 9 image URLs"),
    (Seedance2ProInput, {"prompt": "p", "video_url": [CLIP] * 4}, "video_url", "at most 3 video URLs"),
    (Seedance2ProInput, {"prompt": "p", "audio_url": [SONG] * 4}, "audio_url", "at most 3 audio URLs"),
    (Seedance2ProInput, {"prompt": "p", "image_url": 7}, "image_url", "list of at most 9"),
    (Seedance2ProInput, {"prompt": "p", "image_url": [IMG, "nope"]}, "image_url.1", "URL"),
    (
        Seedance2ProInput,
        {"prompt": "p", "video_url": ["data:video/mp4;base64,AAAA"]},
        "video_url.0",
        "https:// or http:// URL",
    ),
    (Seedance2ProInput, {"prompt": "p", "audio_url": ["s3://bucket/a.mp3"]}, "audio_url.0", "URL"),
    (Seedance2ProInput, {"prompt": "p", "aspect_ratio": "2:1"}, "aspect_ratio", "one of adaptive"),
    (Seedance2ProInput, {"prompt": "p", "duration": 3}, "duration", "from 4 to 15 seconds"),
    (Seedance2ProInput, {"prompt": "p", "duration": 16}, "duration", "from 4 to 15 seconds"),
    (Seedance2ProInput, {"prompt": "p", "duration": 5.5}, "duration", "whole number"),
    (Seedance2ProInput, {"prompt": "p", "duration": True}, "duration", "not a boolean"),
    (Seedance2ProInput, {"prompt": "p", "resolution": "1080p"}, "resolution", "one of 480p, 720p"),
    (Seedance2ProInput, {"prompt": "p", "generate_audio": "yes"}, "generate_audio", "boolean"),
    (Seedance2ProInput, {"prompt": "p", "seed": "lucky"}, "seed", "integer"),
    (Seedance2ProInput, {"prompt": "p", "seed": 1.5}, "seed", "whole number"),
    (Seedance25ImageToVideoInput, {"prompt": "p"}, "image", "is required"),
    (Seedance25ImageToVideoInput, {"prompt": "p", "image": "image.png"}, "image", "URL"),
    (Seedance25ImageToVideoInput, {"prompt": "p", "image": IMG, "duration": 31}, "duration", "4 to 30"),
    (Seedance25ImageToVideoInput, {"prompt": "p", "image": IMG, "duration": 3}, "duration", "4 to 30"),
    (
        Seedance25ImageToVideoInput,
        {"prompt": "p", "image": IMG, "generate_audio": 1},
        "generate_audio",
        "boolean",
    ),
    (Seedance25TextToVideoInput, {}, "prompt", "is required"),
    (Seedance25TextToVideoInput, {"prompt": "p", "aspect_ratio": "4:5"}, "aspect_ratio", "one of"),
    (Seedance25TextToVideoInput, {"prompt": "p", "duration": "forty"}, "duration", "4 to 30"),
    (Seedance25TextToVideoInput, {"prompt": "p", "generate_audio": "false"}, "generate_audio", "boolean"),
]


@pytest.mark.parametrize(("model", "data", "field", "rule"), BAD_INPUTS)
def test_bad_value_is_rejected_naming_field_and_rule(
    model: type[SeedanceInputModel], data: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(SeedanceInputError) as info:
        model.validate_input(data)
    entries = {e["field"]: e for e in info.value.errors}
    assert field in entries, info.value.errors
    assert rule in entries[field]["rule"]
    assert f"- {field}: " in str(info.value)
    assert "nothing was sent to the API" in str(info.value)


# (model, an input with a field the model does not have)
UNKNOWN_FIELDS: list[tuple[type[SeedanceInputModel], dict[str, Any], str]] = [
    (
        Seedance1LiteImageToVideoInput,
        {"prompt": "p", "first_frame_image_url": IMG, "duration": 5},
        "duration",
    ),
    (Seedance1LiteReferenceToVideoInput, {"prompt": "p", "images": [IMG]}, "prompt"),
    (Seedance1ProFastTextToVideoInput, {"text": "t", "prompt": "p"}, "prompt"),
    (Seedance2ProInput, {"prompt": "p", "ratio": "16:9"}, "ratio"),
    (Seedance2ProInput, {"prompt": "p", "image_urls": [IMG]}, "image_urls"),
    (Seedance25ImageToVideoInput, {"prompt": "p", "image_url": IMG}, "image_url"),
    (Seedance25TextToVideoInput, {"prompt": "p", "resolution": "4k"}, "resolution"),
]


@pytest.mark.parametrize(("model", "data", "field"), UNKNOWN_FIELDS)
def test_unknown_field_is_rejected(model: type[SeedanceInputModel], data: dict[str, Any], field: str) -> None:
    with pytest.raises(SeedanceInputError) as info:
        model.validate_input(data)
    (entry,) = [e for e in info.value.errors if e["field"] == field]
    assert entry["rule"].startswith("unknown field")
    assert model.__name__ in entry["rule"]


def test_non_mapping_input_is_rejected() -> None:
    with pytest.raises(SeedanceInputError, match="must be a mapping"):
        Seedance2ProInput.validate_input(["prompt"])  # type: ignore[arg-type]


def test_long_prompt_is_sent_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    prompt = "x" * 600
    with caplog.at_level(logging.WARNING):
        body = Seedance1ProFastTextToVideoInput.validate_input({"text": prompt}).to_request_body()
    assert body == {"text": prompt}
    assert "text is 600 characters long" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------


def test_registry_covers_every_documented_model_id() -> None:
    expected = {
        SEEDANCE_1_5_PRO_I2V_MODEL_ID: SeedanceImageToVideoInput,
        SEEDANCE_1_LITE_I2V_MODEL_ID: Seedance1LiteImageToVideoInput,
        SEEDANCE_1_LITE_R2V_MODEL_ID: Seedance1LiteReferenceToVideoInput,
        SEEDANCE_1_PRO_FAST_T2V_MODEL_ID: Seedance1ProFastTextToVideoInput,
        SEEDANCE_2_PRO_MODEL_ID: Seedance2ProInput,
        "bytedance/seedance-2.5/image-to-video/480p": Seedance25ImageToVideoInput,
        "bytedance/seedance-2.5/image-to-video/720p": Seedance25ImageToVideoInput,
        "bytedance/seedance-2.5/image-to-video/1080p": Seedance25ImageToVideoInput,
        "bytedance/seedance-2.5/image-to-video/4k": Seedance25ImageToVideoInput,
        "bytedance/seedance-2.5/text-to-video/1080p": Seedance25TextToVideoInput,
        "bytedance/seedance-2.5/text-to-video/4k": Seedance25TextToVideoInput,
    }
    assert expected == INPUT_MODELS
    assert set(SEEDANCE_2_5_I2V_MODEL_IDS) == {"480p", "720p", "1080p", "4k"}
    assert set(SEEDANCE_2_5_T2V_MODEL_IDS) == {"1080p", "4k"}
    assert SEEDANCE_1_LITE_I2V_MODEL_ID == "bytedance/seedance-1-0/lite/image-to-video"
    assert SEEDANCE_2_PRO_MODEL_ID == "bytedance/seedance-v2/pro"


@pytest.mark.parametrize("model_id", ALL_MODEL_IDS)
def test_input_model_for_known_ids(model_id: str) -> None:
    assert input_model_for(model_id) is INPUT_MODELS[model_id]
    assert input_model_for(f" {model_id}/ ") is INPUT_MODELS[model_id]


@pytest.mark.parametrize(
    "model_id", ["bytedance/seedance-v3/ultra", "BYTEDANCE/SEEDANCE-V2/PRO", "", "kling/video"]
)
def test_input_model_for_unknown_ids(model_id: str) -> None:
    assert input_model_for(model_id) is None


def test_validate_request_body_uses_the_typed_model() -> None:
    body = validate_request_body(SEEDANCE_2_PRO_MODEL_ID, {"prompt": "p", "duration": "8"})
    assert body == {"prompt": "p", "duration": 8}
    with pytest.raises(SeedanceInputError, match="aspect_ratio"):
        validate_request_body(SEEDANCE_2_PRO_MODEL_ID, {"prompt": "p", "aspect_ratio": "square"})


def test_validate_request_body_passes_unknown_models_through() -> None:
    data = {"whatever": [1, 2], "prompt": None}
    body = validate_request_body("vendor/other-model", data)
    assert body == data
    assert body is not data
    with pytest.raises(SeedanceInputError, match="must be a mapping"):
        validate_request_body("vendor/other-model", "prompt=p")  # type: ignore[arg-type]


def test_validate_request_body_accepts_a_built_model() -> None:
    model = Seedance25ImageToVideoInput(prompt="p", image=IMG, duration=10)
    assert validate_request_body(SEEDANCE_2_5_I2V_MODEL_IDS["4k"], model) == {
        "prompt": "p",
        "image": IMG,
        "duration": 10,
    }
    with pytest.raises(SeedanceInputError, match="cannot be sent to bytedance/seedance-v2/pro"):
        validate_request_body(SEEDANCE_2_PRO_MODEL_ID, model)


# ---------------------------------------------------------------------------------------------------------
# duration_seconds
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "body", "seconds"),
    [
        (SEEDANCE_1_5_PRO_I2V_MODEL_ID, {"duration": 12}, 12.0),
        (SEEDANCE_1_5_PRO_I2V_MODEL_ID, {}, 5.0),
        (SEEDANCE_2_PRO_MODEL_ID, {"prompt": "p"}, 5.0),
        (SEEDANCE_2_PRO_MODEL_ID, {"prompt": "p", "duration": 15}, 15.0),
        (SEEDANCE_2_5_I2V_MODEL_IDS["1080p"], {"prompt": "p", "image": IMG}, 5.0),
        (SEEDANCE_2_5_I2V_MODEL_IDS["4k"], {"duration": "20"}, 20.0),
        # No documented default: the length is unknown until the user sets it.
        (SEEDANCE_2_5_T2V_MODEL_IDS["4k"], {"prompt": "p"}, None),
        (SEEDANCE_2_5_T2V_MODEL_IDS["4k"], {"prompt": "p", "duration": 9}, 9.0),
        # Models whose pages document no duration at all.
        (SEEDANCE_1_LITE_I2V_MODEL_ID, {"prompt": "p"}, None),
        (SEEDANCE_1_PRO_FAST_T2V_MODEL_ID, {"text": "t"}, None),
        # Unknown models: only an explicit duration counts.
        ("vendor/other", {"duration": 7.5}, 7.5),
        ("vendor/other", {}, None),
        ("vendor/other", {"duration": True}, None),
        ("vendor/other", {"duration": "soon"}, None),
        ("vendor/other", {"duration": -3}, None),
        ("vendor/other", {"duration": float("nan")}, None),
    ],
)
def test_duration_seconds(model_id: str, body: dict[str, Any], seconds: float | None) -> None:
    assert duration_seconds(model_id, body) == seconds


@given(duration=st.integers(min_value=4, max_value=30), as_text=st.booleans())
def test_any_valid_2_5_duration_round_trips(duration: int, as_text: bool) -> None:
    value: object = str(duration) if as_text else duration
    body = Seedance25ImageToVideoInput.validate_input(
        {"prompt": "p", "image": IMG, "duration": value}
    ).to_request_body()
    assert body["duration"] == duration
    assert duration_seconds(SEEDANCE_2_5_I2V_MODEL_IDS["720p"], body) == float(duration)


# ---------------------------------------------------------------------------------------------------------
# Catalog validation in the operators, and the Seedance 2.0 Pro preset
# ---------------------------------------------------------------------------------------------------------


def test_submit_operator_validates_with_the_catalog_when_asked(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    bad = {"prompt": "A fox", "ratio": "16:9"}
    op = SeedanceSubmitOperator(
        task_id="generate", model_id=SEEDANCE_2_PRO_MODEL_ID, input=bad, validate_input=True
    )
    with pytest.raises(SeedanceInputError, match="ratio: unknown field"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []

    emulator.set_plan(STUCK)
    op = SeedanceSubmitOperator(
        task_id="generate",
        model_id=SEEDANCE_2_PRO_MODEL_ID,
        input={"prompt": "A fox", "duration": "8"},
        validate_input=True,
        wait_for_completion=False,
    )
    op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests("submit")[-1].body == {"prompt": "A fox", "duration": 8}


def test_submit_operator_sends_an_unknown_model_input_as_written(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.state.register_model("someone/else/model", base_price_usd=0.5, price_unit="output")
    emulator.set_plan(STUCK)
    op = SeedanceSubmitOperator(
        task_id="generate",
        model_id="someone/else/model",
        input={"anything": [1, 2]},
        validate_input=True,
        wait_for_completion=False,
        max_cost_usd=0.5,
    )
    assert op.execute(make_context(store=FakeTaskStateStore()))["status"] == "submitted"
    assert emulator.state.requests("submit")[-1].body == {"anything": [1, 2]}


def test_v2_pro_template_fields_cover_every_input() -> None:
    assert set(SeedanceV2ProOperator.template_fields) == {
        "model_id",
        "seedance_conn_id",
        *Seedance2ProInput.model_fields,
    }


def test_v2_pro_sends_only_the_fields_set(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    op = SeedanceV2ProOperator(
        task_id="generate",
        prompt="A fox runs",
        image_url=IMAGE,
        duration="8",
        wait_for_completion=False,
        max_cost_usd=1.0,  # 0.12 USD/s x 8 s = 0.96
    )
    op.execute(make_context(store=FakeTaskStateStore()))
    [submit] = emulator.state.requests("submit")
    assert submit.model_id == SEEDANCE_2_PRO_MODEL_ID
    assert submit.body == {"prompt": "A fox runs", "image_url": [IMAGE], "duration": 8}


def test_v2_pro_rejects_bad_input_and_over_budget(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    with pytest.raises(SeedanceInputError, match="duration"):
        SeedanceV2ProOperator(task_id="g", prompt="x", duration=20).execute(make_context())
    op = SeedanceV2ProOperator(task_id="g", prompt="x", duration=15, max_cost_usd=1.5)
    with pytest.raises(SeedanceCostLimitError, match=r"1\.8 USD"):
        op.execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.count("submit") == 0
