"""Bad input, property-based: invalid values never reach the API; valid ones reach it exactly.

Over ``SeedanceImageToVideoOperator``'s inputs and ``SeedanceSubmitOperator``'s ``model_id``/``input``:

* every invalid value (wrong types, out-of-range durations, bools for ints, non-http URLs, bad enums,
  unknown fields, empty or whitespace prompts, bad model ids, inputs JSON cannot carry) raises
  ``SeedanceInputError`` naming the field, and the emulator receives no request at all;
* every valid value goes through ``execute()`` (``wait_for_completion=False``: validation, submit over real
  HTTP, XCom) and the emulator receives exactly the JSON body the schema defines: same keys, same values,
  same JSON types (``5`` not ``5.0``, ``true`` not ``1``), normalised where the schema says so (stripped URL
  and enums, integral durations as integers).

One emulator serves the module (no function-scoped fixture, so hypothesis' health check has nothing to
object to); it is reset before every example.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import string
from typing import TYPE_CHECKING, Any, cast

import pytest
from airflow.sdk import BaseOperator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_seedance.exceptions import SeedanceInputError
from airflow_provider_seedance.models import (
    MODEL_ID_PATTERN,
    SEEDANCE_1_5_PRO_I2V_MODEL_ID,
    SeedanceImageToVideoInput,
)
from airflow_provider_seedance.operators.seedance import (
    SeedanceBaseOperator,
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
)
from tests.operators._dag_support import FakeTaskInstance, FakeTaskStateStore, make_context

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_seedance.testing import SeedanceEmulator

PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
"""Modest and reproducible: ~60 examples per property, no per-example deadline (real HTTP)."""

RESOLUTIONS = ("480p", "720p", "1080p")
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
FIELDS = tuple(SeedanceImageToVideoInput.model_fields)
DEFAULTS = {
    "resolution": "480p",
    "ratio": "adaptive",
    "duration": 5,
    "generate_audio": True,
    "camera_fixed": True,
}
GENERIC_MODEL = "bytedance/seedance-v2/pro"
OPERATOR_PARAMETERS = frozenset(
    name
    for cls in (SeedanceImageToVideoOperator, SeedanceBaseOperator, BaseOperator)
    for name in inspect.signature(cls.__init__).parameters
)
"""Keyword arguments the typed operator accepts: an unknown input field is any other name."""
WHITESPACE = " \t\n\r\u00a0\u2003\u3000"


@pytest.fixture(scope="module")
def api(module_emulator: SeedanceEmulator) -> SeedanceEmulator:
    """The module's emulator (``seedance_default`` points at it)."""
    return module_emulator


# ---------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------

pads = st.sampled_from(["", " ", "\t", " \n"])
"""Surrounding whitespace a rendered template may leave: stripped where the schema strips."""

hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\.[a-z]{2,8}){1,3}", fullmatch=True),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts))),
    st.just("[::1]"),
)
http_urls = st.builds(
    lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
    st.sampled_from(["https", "http", "HTTPS", "Http"]),
    hosts,
    st.sampled_from(["", ":8443", ":80"]),
    st.from_regex(r"(/[A-Za-z0-9._~%-]{1,12}){0,4}", fullmatch=True),
    st.sampled_from(["", "?w=512&h=512", "?X-Amz-Signature=abc%2Fdef"]),
)
data_uris = st.builds(
    lambda kind, data: f"data:image/{kind};base64,{base64.b64encode(data).decode()}",
    st.sampled_from(["png", "jpeg", "webp", "gif"]),
    st.binary(min_size=1, max_size=48),
)
prompts = st.text(min_size=1, max_size=600).filter(lambda text: bool(text.strip()))


@st.composite
def valid_i2v(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw operator kwargs for the typed operator and the exact JSON body they must produce."""
    kwargs: dict[str, Any] = {}
    expected = dict(DEFAULTS)
    kwargs["prompt"] = expected["prompt"] = draw(prompts)
    url = draw(st.one_of(http_urls, data_uris))
    kwargs["first_frame_image_url"] = draw(pads) + url + draw(pads)
    expected["first_frame_image_url"] = url
    if draw(st.booleans()):
        value = draw(st.sampled_from(RESOLUTIONS))
        kwargs["resolution"], expected["resolution"] = draw(pads) + value + draw(pads), value
    if draw(st.booleans()):
        value = draw(st.sampled_from(RATIOS))
        kwargs["ratio"], expected["ratio"] = draw(pads) + value + draw(pads), value
    if draw(st.booleans()):
        seconds = draw(st.integers(4, 12))
        # An int, an integral float, or the text a template renders ("7", " 07 ").
        kwargs["duration"] = draw(
            st.sampled_from([seconds, float(seconds), str(seconds), f" {seconds:02d} "])
        )
        expected["duration"] = seconds
    for flag in ("generate_audio", "camera_fixed"):
        if draw(st.booleans()):
            kwargs[flag] = expected[flag] = draw(st.booleans())
    return kwargs, expected


not_text = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=4),
)
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(not_text, st.text(alphabet=WHITESPACE, max_size=6)),
    "first_frame_image_url": st.one_of(
        not_text,
        st.text(alphabet=WHITESPACE, max_size=3),
        st.builds(
            lambda scheme, host: f"{scheme}://{host}/frame.png",
            st.sampled_from(["ftp", "file", "s3", "gs", "ws", "htp", "sftp"]),
            hosts,
        ),
        st.sampled_from(
            [
                "javascript:alert(1)",
                "/frame.png",
                "frame.png",
                "www.example.com/frame.png",
                "https://",
                "https:///frame.png",
                "https:example.com/frame.png",
                "data:text/plain;base64,aGVsbG8=",
                "data:image/png,not-base64",
            ]
        ),
    ),
    "resolution": st.one_of(
        not_text,
        st.text(max_size=8).filter(lambda v: v.strip() not in RESOLUTIONS),
        st.sampled_from(["480P", "720", "4k", "1080i", "hd"]),
    ),
    "ratio": st.one_of(
        not_text,
        st.text(max_size=8).filter(lambda v: v.strip() not in RATIOS),
        st.sampled_from(["16/9", "16:10", "ADAPTIVE", "auto", "9x16"]),
    ),
    "duration": st.one_of(
        st.integers().filter(lambda v: not 4 <= v <= 12),
        st.booleans(),
        st.floats().filter(lambda v: not (v == v and v in range(4, 13))),
        st.sampled_from(["five", "4.0", "4s", "", " ", "+5", "5 seconds", "3", "13", "-5"]),
        st.none(),
        st.lists(st.integers(4, 12), min_size=1, max_size=2),
    ),
    "generate_audio": st.one_of(
        st.integers(0, 1), st.sampled_from(["true", "True", "false", "yes", ""]), st.none(), st.floats()
    ),
    "camera_fixed": st.one_of(
        st.integers(0, 1), st.sampled_from(["true", "False", "no", "1"]), st.none(), st.floats()
    ),
}


@st.composite
def invalid_i2v(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Draw operator kwargs that are valid except for one field; return that field and the kwargs."""
    kwargs, _ = draw(valid_i2v())
    field = draw(st.sampled_from(FIELDS))
    kwargs[field] = draw(INVALID[field])
    return field, kwargs


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
model_ids = st.from_regex(MODEL_ID_PATTERN, fullmatch=True).filter(lambda v: 0 < len(v) <= 80)


# ---------------------------------------------------------------------------------------------------------
# Running the operator against the emulator
# ---------------------------------------------------------------------------------------------------------


def submit_through(operator: Any, api: SeedanceEmulator) -> Any:
    """
    Run ``execute()`` once (``wait_for_completion=False``) and return what it returned.

    :param operator: the operator.
    :param api: the emulator (its request log tells what arrived).
    """
    ti = FakeTaskInstance()
    try:
        result = operator.execute(new_context(ti))
    finally:
        operator.hook.close()
    assert ti.xcom_values["request_id"] == result["request_id"]
    return result


def new_context(ti: FakeTaskInstance | None = None) -> Context:
    """
    Return a task context with a fresh task instance and task state store.

    :param ti: the task instance (a new one when ``None``).
    """
    return cast("Context", make_context(ti or FakeTaskInstance(), FakeTaskStateStore()))


def exact(body: Any) -> str:
    """Render a body as canonical JSON, so ``5`` and ``5.0``, ``true`` and ``1`` stay different."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def i2v(**kwargs: Any) -> SeedanceImageToVideoOperator:
    """Build the typed operator (``wait_for_completion=False``) from drawn kwargs."""
    return SeedanceImageToVideoOperator(task_id="generate", wait_for_completion=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The typed operator
# ---------------------------------------------------------------------------------------------------------


@PROPERTIES
@given(case=valid_i2v())
def test_valid_typed_input_reaches_the_api_exactly(api: SeedanceEmulator, case: tuple[dict, dict]) -> None:
    """Valid kwargs produce exactly the schema's JSON body, every field with its exact key and type."""
    kwargs, expected = case
    api.reset()
    result = submit_through(i2v(**kwargs), api)
    [submit] = api.state.requests()
    assert submit.endpoint == "submit"
    assert submit.model_id == SEEDANCE_1_5_PRO_I2V_MODEL_ID
    assert exact(submit.body) == exact(expected)
    assert list(submit.body) == list(FIELDS)
    assert result == {
        "request_id": api.state.jobs()[0].request_id,
        "model_id": submit.model_id,
        "status": "submitted",
    }


@PROPERTIES
@given(case=invalid_i2v())
def test_invalid_typed_input_names_the_field_and_sends_nothing(
    api: SeedanceEmulator, case: tuple[str, dict]
) -> None:
    """One invalid field: SeedanceInputError naming exactly that field, before any HTTP request."""
    field, kwargs = case
    api.reset()
    operator = i2v(**kwargs)
    with pytest.raises(SeedanceInputError) as caught:
        operator.execute(new_context())
    assert [error["field"] for error in caught.value.errors] == [field]
    assert f"- {field}: " in str(caught.value)
    assert "nothing was sent to the API" in str(caught.value)
    assert api.state.count() == 0


@PROPERTIES
@given(
    name=st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=15).filter(
        lambda name: name not in OPERATOR_PARAMETERS
    ),
    value=json_scalars,
)
def test_unknown_fields_are_refused_by_name(api: SeedanceEmulator, name: str, value: Any) -> None:
    """A typo (``aspect_ratio``) is refused: by the schema, naming it; by the operator, at DAG definition."""
    api.reset()
    data = {
        "prompt": "A lighthouse at dusk",
        "first_frame_image_url": "https://example.com/a.png",
        name: value,
    }
    with pytest.raises(SeedanceInputError) as caught:
        SeedanceImageToVideoInput.validate_input(data)
    assert [error["field"] for error in caught.value.errors] == [name]
    assert "unknown field" in str(caught.value)
    with pytest.raises(TypeError, match=name):
        i2v(prompt="A lighthouse at dusk", first_frame_image_url="https://example.com/a.png", **{name: value})
    assert api.state.count() == 0


@PROPERTIES
@given(
    model_id=st.one_of(st.text(max_size=20), st.integers(), st.none()).filter(
        lambda v: not (isinstance(v, str) and MODEL_ID_PATTERN.match(v.strip()))
    )
)
def test_invalid_model_id_is_refused(api: SeedanceEmulator, model_id: Any) -> None:
    """A model id that cannot go into the URL path is refused, for the typed and the generic operator."""
    api.reset()
    operators = [
        i2v(model_id=model_id, prompt="A lighthouse", first_frame_image_url="https://example.com/a.png"),
        SeedanceSubmitOperator(
            task_id="generic", model_id=model_id, input={"prompt": "x"}, wait_for_completion=False
        ),
    ]
    for operator in operators:
        with pytest.raises(SeedanceInputError, match=r"^model_id: "):
            operator.execute(new_context())
    assert api.state.count() == 0


# ---------------------------------------------------------------------------------------------------------
# The generic operator
# ---------------------------------------------------------------------------------------------------------


@PROPERTIES
@given(model_id=model_ids, pad=pads, body=json_objects, as_text=st.booleans())
def test_valid_generic_input_reaches_the_api_exactly(
    api: SeedanceEmulator, model_id: str, pad: str, body: dict[str, Any], as_text: bool
) -> None:
    """Any JSON object (or its JSON text, as a template renders it) is sent as written, to the given model."""
    api.reset()
    api.state.register_model(model_id)
    operator = SeedanceSubmitOperator(
        task_id="generic",
        model_id=pad + model_id + pad,
        input=json.dumps(body) if as_text else body,
        wait_for_completion=False,
    )
    result = submit_through(operator, api)
    [submit] = api.state.requests()
    assert submit.path == f"/v1/models/{model_id}"
    assert submit.model_id == model_id
    assert exact(submit.body) == exact(body)
    assert result["model_id"] == model_id


class _Opaque:
    """A value JSON cannot carry."""


@PROPERTIES
@given(
    data=st.one_of(
        st.lists(json_scalars, max_size=3),
        st.integers(),
        st.none(),
        st.text(max_size=10).filter(lambda t: not t.strip().startswith("{")),
        st.just("[1, 2]"),
        st.just('{"prompt": '),
        st.dictionaries(
            st.text(max_size=5),
            st.one_of(
                st.sets(st.integers(), min_size=1, max_size=2),
                st.binary(min_size=1, max_size=3),
                st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                st.builds(_Opaque),
            ),
            min_size=1,
            max_size=2,
        ),
    )
)
def test_invalid_generic_input_is_refused(api: SeedanceEmulator, data: Any) -> None:
    """An input that is not a JSON object is refused as ``input``; a value JSON cannot carry, by its key."""
    api.reset()
    operator = SeedanceSubmitOperator(
        task_id="generic", model_id=GENERIC_MODEL, input=data, wait_for_completion=False
    )
    if isinstance(data, dict):
        key = next(iter(data))  # every value of these dictionaries is one JSON cannot carry
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key)
        where = f"input.{key}" if plain else f"input[{key!r}]"
    else:
        where = "input"
    with pytest.raises(SeedanceInputError, match=f"^{re.escape(where)}: ") as info:
        operator.execute(new_context())
    if isinstance(data, dict):
        assert info.value.errors[0]["field"] == where
    assert api.state.count() == 0
