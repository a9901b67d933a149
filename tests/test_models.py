"""The input schema of Seedance 1.5 Pro, the tolerant response models and the shared status policy."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_seedance.exceptions import SeedanceError, SeedanceInputError
from airflow_provider_seedance.models import (
    RequestStatus,
    ResultResponse,
    SeedanceImageToVideoInput,
    SeedanceTriggerEvent,
    StatusResponse,
    SubmitResponse,
    build_generation_result,
    describe_error,
)

VALID = {"prompt": "A cat surfs a wave", "first_frame_image_url": "https://example.com/cat.png"}


def validate(**changes: object) -> SeedanceImageToVideoInput:
    return SeedanceImageToVideoInput.validate_input({**VALID, **changes})  # type: ignore[return-value]


def test_defaults_and_exact_body_keys() -> None:
    assert validate().to_request_body() == {
        "prompt": "A cat surfs a wave",
        "first_frame_image_url": "https://example.com/cat.png",
        "resolution": "480p",
        "ratio": "adaptive",
        "duration": 5,
        "generate_audio": True,
        "camera_fixed": True,
    }


@pytest.mark.parametrize("resolution", ["480p", "720p", "1080p"])
def test_every_resolution_accepted(resolution: str) -> None:
    assert validate(resolution=resolution).resolution == resolution


@pytest.mark.parametrize("ratio", ["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"])
def test_every_ratio_accepted(ratio: str) -> None:
    assert validate(ratio=ratio).ratio == ratio


@pytest.mark.parametrize("duration", range(4, 13))
def test_every_duration_accepted(duration: int) -> None:
    assert validate(duration=duration).duration == duration


@pytest.mark.parametrize(("given", "expected"), [(6.0, 6), ("7", 7), (" 8 ", 8)])
def test_integral_floats_and_rendered_templates_become_ints(given: object, expected: int) -> None:
    value = validate(duration=given).duration
    assert value == expected
    assert type(value) is int


def test_data_uri_accepted() -> None:
    uri = "data:image/png;base64,iVBORw0KGgo="
    assert validate(first_frame_image_url=uri).first_frame_image_url == uri


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.png",
        "https://例子.测试/frame.png",  # an internationalised domain name
        "https://bücher.example/frame.png",
        "https://files_internal.example.com/a.png",  # underscores exist in real DNS names
        "https://example.com./a.png",  # a fully qualified name
        "https://2852039166/a.png",  # decimal IPv4, as URL parsers read it
        "https://10.1.2/a.png",
        "https://0251.0376.0251.0376/a.png",  # octal parts
        "https://[2001:db8::1]:8443/a.png",
        "http://example.com:80/a b.png",  # fetchers percent-encode the path: left alone
    ],
)
def test_well_formed_image_urls_are_accepted(url: str) -> None:
    assert validate(first_frame_image_url=url).first_frame_image_url == url


@pytest.mark.parametrize(
    ("url", "rule_fragment"),
    [
        ("https://ho st/a.png", "contains a space or an invisible character"),
        ("https://exa\u200bmple.com/a.png", "contains a space or an invisible character"),
        ("https://example..com/a.png", "is not a valid host name"),
        ("https://-cdn.example.com/a.png", "is not a valid host name"),
        ("https://" + "a" * 64 + ".com/a.png", "is not a valid host name"),
        ("https://256.1.1.1/a.png", "is not a valid IPv4 address"),
        ("https://1.2.3.4.5/a.png", "is not a valid IPv4 address"),
        ("https://08.1.1.1/a.png", "is not a valid IPv4 address"),
        ("https://[::zz]/a.png", "well-formed URL"),
        ("https://example.com:99999/a.png", "is not a number from 1 to 65535"),
        ("https://example.com:0/a.png", "is not a number from 1 to 65535"),
        ("https://example.com/a.png\r\nX-Injected: 1", "control character"),
        ("https://example.com/a\x00.png", "control character"),
    ],
)
def test_a_url_the_api_could_not_fetch_is_refused_before_any_call(url: str, rule_fragment: str) -> None:
    # The API fetches the URL itself, maybe after billing the request: a broken one must never reach it.
    with pytest.raises(SeedanceInputError) as info:
        validate(first_frame_image_url=url)
    assert "- first_frame_image_url: " in str(info.value)
    assert rule_fragment in str(info.value)
    assert [e["field"] for e in info.value.errors] == ["first_frame_image_url"]


def test_a_refused_urls_signature_is_not_repeated() -> None:
    url = "https://ho st/a.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=0123abcd&w=512"
    with pytest.raises(SeedanceInputError) as info:
        validate(first_frame_image_url=url)
    for secret in ("AKIAEXAMPLE", "0123abcd"):
        assert secret not in str(info.value)
        assert secret not in str(info.value.errors)
    assert "w=512" in str(info.value)  # what picks content stays


@pytest.mark.parametrize(
    ("field", "value", "rule_fragment"),
    [
        ("prompt", "", "must not be empty"),
        ("prompt", "   ", "must not be empty"),
        ("prompt", 42, "must be a string"),
        ("first_frame_image_url", "ftp://example.com/a.png", "https:// or http://"),
        ("first_frame_image_url", "example.com/a.png", "https:// or http://"),
        ("first_frame_image_url", "https:///nohost.png", "with a host"),
        ("first_frame_image_url", "data:text/plain;base64,AAAA", "data:image/"),
        ("first_frame_image_url", None, "must be a string"),
        ("resolution", "4k", "one of 480p, 720p, 1080p"),
        ("resolution", "480P", "one of 480p, 720p, 1080p"),
        ("ratio", "2:1", "one of 16:9"),
        ("duration", 3, "from 4 to 12"),
        ("duration", 13, "from 4 to 12"),
        ("duration", True, "not a boolean"),
        ("duration", 5.5, "whole number"),
        ("duration", "five", "from 4 to 12"),
        ("generate_audio", "true", "boolean"),
        ("generate_audio", 1, "boolean"),
        ("camera_fixed", "false", "boolean"),
        ("camera_fixed", None, "boolean"),
    ],
)
def test_bad_values_name_the_field_and_rule(field: str, value: object, rule_fragment: str) -> None:
    with pytest.raises(SeedanceInputError) as info:
        validate(**{field: value})
    message = str(info.value)
    assert f"- {field}: " in message
    assert rule_fragment in message
    assert "nothing was sent to the API" in message
    assert [e["field"] for e in info.value.errors] == [field]


def test_unknown_field_is_rejected_with_the_allowed_list() -> None:
    with pytest.raises(SeedanceInputError, match=r"aspect_ratio: unknown field; .* accepts only: prompt"):
        validate(aspect_ratio="16:9")


def test_missing_required_fields_are_each_named() -> None:
    with pytest.raises(SeedanceInputError) as info:
        SeedanceImageToVideoInput.validate_input({})
    assert {e["field"] for e in info.value.errors} == {"prompt", "first_frame_image_url"}
    assert "prompt: is required" in str(info.value)


def test_non_mapping_input_is_rejected() -> None:
    with pytest.raises(SeedanceInputError, match="must be a mapping"):
        SeedanceImageToVideoInput.validate_input(["prompt"])  # type: ignore[arg-type]


def test_long_prompt_is_sent_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = validate(prompt="x" * 501)
    assert len(model.prompt) == 501
    assert "recommends fewer than 500" in caplog.text


def test_input_error_is_a_seedance_error_and_value_error() -> None:
    with pytest.raises(SeedanceError):
        validate(duration=99)
    with pytest.raises(ValueError, match="duration"):
        validate(duration=99)


def test_response_models_accept_unknown_keys() -> None:
    submitted = SubmitResponse.model_validate({"request_id": "abc_123", "new_field": 1})
    assert submitted.request_id == "abc_123"
    assert submitted.model_extra == {"new_field": 1}
    status = StatusResponse.model_validate({"status": "in_queue", "queue_position": 3, "eta": 9})
    assert status.state is RequestStatus.IN_QUEUE
    assert status.queue_position == 3


def test_submit_response_rejects_a_malformed_request_id() -> None:
    with pytest.raises(ValueError, match="request_id"):
        SubmitResponse.model_validate({"request_id": "../../etc/passwd"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("in_queue", RequestStatus.IN_QUEUE),
        ("IN_PROGRESS", RequestStatus.IN_PROGRESS),
        ("completed", RequestStatus.COMPLETED),
        ("succeeded", RequestStatus.SUCCEEDED),
        ("failed", RequestStatus.FAILED),
        ("canceled", RequestStatus.CANCELLED),
        ("mystery_state", RequestStatus.UNKNOWN),
        (None, RequestStatus.UNKNOWN),
    ],
)
def test_status_parsing(raw: object, expected: RequestStatus) -> None:
    assert RequestStatus.parse(raw) is expected


@pytest.mark.parametrize("state", list(RequestStatus))
def test_status_policy_predicates(state: RequestStatus) -> None:
    # Only queued and running requests are waited on; everything else, an unknown status included, sends
    # the waiters to /result, the final word.
    assert state.is_active() is (state in (RequestStatus.IN_QUEUE, RequestStatus.IN_PROGRESS))
    assert state.is_failure() is (state in (RequestStatus.FAILED, RequestStatus.CANCELLED))


@pytest.mark.parametrize(
    ("body", "succeeded"),
    [
        ({"status": "succeeded"}, True),
        ({"status": "completed", "output": {"video": "https://cdn.example.com/v.mp4"}}, True),
        ({"status": "completed"}, False),
        ({"status": "completed", "output": {"video": "https://cdn.example.com/v.mp4"}, "error": "x"}, False),
        ({"status": "mystery_state", "output": {"video": "https://cdn.example.com/v.mp4"}}, False),
        ({"status": "failed"}, False),
        ({"status": "cancelled"}, False),
        ({"status": "in_progress"}, False),
    ],
)
def test_result_success_rule(body: dict, succeeded: bool) -> None:
    # An unknown status is never success, whatever output it carries.
    assert ResultResponse.model_validate(body).succeeded is succeeded


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ("out of memory", "out of memory"),
        ({"code": 7, "message": "NSFW input"}, "NSFW input (code 7)"),
        ({"error_message": "bad image"}, "bad image"),
        ([{"msg": "a"}, {"msg": "b"}], "a; b"),
        (None, ""),
    ],
)
def test_describe_error_handles_every_shape(error: object, text: str) -> None:
    assert describe_error(error) == text


def test_result_error_text_falls_back_to_failure_reason() -> None:
    result = ResultResponse.model_validate({"status": "failed", "failure_reason": "timeout on GPU"})
    assert result.error_text == "timeout on GPU"


def test_build_generation_result_shape() -> None:
    result = ResultResponse.model_validate(
        {
            "request_id": "r1",
            "status": "succeeded",
            "output": {"video": "https://cdn/a.mp4", "videos": ["https://cdn/a.mp4", "https://cdn/b.mp4"]},
            "cost": 0.3,
        }
    )
    assert build_generation_result(request_id="r1", model_id="m/x", result=result) == {
        "request_id": "r1",
        "model_id": "m/x",
        "status": "succeeded",
        "video_url": "https://cdn/a.mp4",
        "video_urls": ["https://cdn/a.mp4", "https://cdn/b.mp4"],
        "image_urls": [],
        "output": {"video": "https://cdn/a.mp4", "videos": ["https://cdn/a.mp4", "https://cdn/b.mp4"]},
        "cost": 0.3,
    }


def test_build_generation_result_uses_videos_when_video_is_absent() -> None:
    built = build_generation_result(
        request_id="r1",
        model_id=None,
        result={
            "status": "succeeded",
            "output": {"videos": ["https://cdn/1.mp4"], "image": "https://cdn/i.png"},
        },
    )
    assert built["video_url"] == "https://cdn/1.mp4"
    assert built["image_urls"] == ["https://cdn/i.png"]
    assert built["cost"] is None


def test_trigger_event_validation() -> None:
    event = SeedanceTriggerEvent.parse(
        {"status": "succeeded", "request_id": "r1", "result": {}, "message": "ok"}
    )
    assert event.status == "succeeded"
    with pytest.raises(SeedanceError, match="malformed Seedance trigger event"):
        SeedanceTriggerEvent.parse({"status": "done", "request_id": "r1"})
    with pytest.raises(SeedanceError, match="malformed"):
        SeedanceTriggerEvent.parse("succeeded")
    with pytest.raises(SeedanceError, match="while waiting for 'r2'"):
        SeedanceTriggerEvent.parse({"status": "failed", "request_id": "r1"}, expected_request_id="r2")
