"""The image-to-video example DAG parses with no network and no connection, and is wired as documented."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from tests._compat import dag_bag

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_seedance_image_to_video.py"


def test_example_parses_offline_without_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SEEDANCE_DEFAULT", raising=False)

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("parsing the example DAG opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = dag_bag(EXAMPLE)

    assert bag.import_errors == {}
    dag = bag.dags["example_seedance_image_to_video"]
    generate = dag.get_task("generate_video")
    assert isinstance(generate, SeedanceImageToVideoOperator)
    assert generate.deferrable is True
    assert (generate.resolution, generate.ratio, generate.duration) == ("720p", "16:9", 5)
    assert generate.retries == 2
    assert {t.task_id for t in generate.downstream_list} == {"report"}
