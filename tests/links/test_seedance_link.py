"""The extra link: it shows only an http(s) video URL, from the running task or its return value."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from airflow_provider_seedance.get_provider_info import get_provider_info
from airflow_provider_seedance.links.seedance import SeedanceVideoLink, remember_video_url, video_link
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.sensors.seedance import SeedanceRequestSensor
from tests.operators._dag_support import IMAGE

NO_TI_KEY: Any = object()


def operator() -> SeedanceImageToVideoOperator:
    return SeedanceImageToVideoOperator(task_id="generate", prompt="A kite", first_frame_image_url=IMAGE)


@pytest.mark.parametrize(
    ("value", "link"),
    [
        ({"video_url": "https://cdn.runcomfy.net/v.mp4"}, "https://cdn.runcomfy.net/v.mp4"),
        ({"video_url": "http://127.0.0.1:1/files/a/0.mp4"}, "http://127.0.0.1:1/files/a/0.mp4"),
        ({"video_url": "javascript:alert(1)"}, ""),
        ({"video_url": None}, ""),
        ({"request_id": "R", "status": "submitted"}, ""),
        (None, ""),
        ("https://not-a-dict", ""),
    ],
)
def test_video_link(value: Any, link: str) -> None:
    assert video_link(value) == link


def test_video_link_reads_the_return_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import xcom

    seen: dict[str, Any] = {}

    def get_value(*, ti_key: Any, key: str) -> Any:
        seen.update(ti_key=ti_key, key=key)
        return {"video_url": "https://cdn.runcomfy.net/out.mp4"}

    monkeypatch.setattr(xcom.XCom, "get_value", staticmethod(get_value))
    assert SeedanceVideoLink().get_link(operator(), ti_key=NO_TI_KEY) == "https://cdn.runcomfy.net/out.mp4"
    assert seen == {"ti_key": NO_TI_KEY, "key": "return_value"}


def test_video_link_of_the_task_that_just_ran_needs_no_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import xcom

    def get_value(**_: Any) -> Any:
        raise AssertionError("no XCom lookup expected")

    monkeypatch.setattr(xcom.XCom, "get_value", staticmethod(get_value))
    op = operator()
    remember_video_url(op, "https://cdn.runcomfy.net/done.mp4")
    assert SeedanceVideoLink().get_link(op, ti_key=NO_TI_KEY) == "https://cdn.runcomfy.net/done.mp4"
    remember_video_url(op, None)  # deferred or failed: no link yet
    assert SeedanceVideoLink().get_link(op, ti_key=NO_TI_KEY) == ""


def test_every_path_to_the_link_names_one_class() -> None:
    # The provider info registers the links/ path; DAGs and serialized tasks of earlier versions name the
    # operators module, which re-exports the same class.
    [registered] = get_provider_info()["extra-links"]
    module, _, name = registered.rpartition(".")
    from airflow_provider_seedance.operators.seedance import SeedanceVideoLink as old_path

    assert getattr(importlib.import_module(module), name) is SeedanceVideoLink
    assert old_path is SeedanceVideoLink
    for task in (operator(), SeedanceRequestSensor(task_id="wait", request_id="abc")):
        assert [type(link) for link in task.operator_extra_links] == [SeedanceVideoLink]
