"""The request store's Variable keys (Airflow 3.0-3.2): one per task instance, whatever the ids hold."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import DAG, TaskGroup

from airflow_provider_seedance.operators import _request_store
from airflow_provider_seedance.operators._request_store import (
    VARIABLE_KEY_MAX_LENGTH,
    legacy_variable_key,
    variable_key,
)
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from tests._compat import store_serialized_dag
from tests.operators._dag_support import IMAGE, START, task_instances, unique_dag_id, xcom

PROMPT = "Two kites tangle over a beach"
RUN_ID = "manual__2025-03-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # Task groups put dots in task ids; DAG ids may hold dots too.
        (("etl.x", "gen", "manual__1", -1), ("etl", "x.gen", "manual__1", -1)),
        # Run ids of scheduled runs repeat in every DAG.
        (
            ("a", "gen", "scheduled__2025-01-01T00:00:00+00:00", -1),
            ("b", "gen", "scheduled__2025-01-01T00:00:00+00:00", -1),
        ),
        (("d", "t", "r.1", -1), ("d", "t.r", "1", -1)),
        (("d", "t", "r", 3), ("d", "t", "r", 4)),
        (("d", "t", "r", -1), ("d", "t", "r", None)),
    ],
)
def test_keys_of_different_task_instances_differ(first: tuple[Any, ...], second: tuple[Any, ...]) -> None:
    same = first[:3] == second[:3] and {first[3], second[3]} <= {-1, None}
    assert (variable_key(*first) == variable_key(*second)) is same


def test_keys_stay_within_airflows_limit_and_show_whose_record_it_is() -> None:
    key = variable_key("etl", "x.gen", "manual__2025-01-01T00:00:00+00:00", -1)
    assert key.startswith("seedance_request.etl.x.gen.")
    longest = variable_key("d" * 250, "t" * 250, "r" * 250, 0)
    assert len(longest) <= VARIABLE_KEY_MAX_LENGTH
    assert longest != variable_key("d" * 250, "t" * 250, "r" * 250, 1)
    assert longest != variable_key("d" * 250 + "x", "t" * 250, "r" * 250, 0)


def test_the_legacy_key_is_read_only_where_it_was_unambiguous() -> None:
    assert legacy_variable_key("d", "t", "manual__2025", -1) == "seedance_request.d.t.manual__2025.-1"
    assert legacy_variable_key("etl.x", "gen", "r", -1) is None
    assert legacy_variable_key("etl", "x.gen", "r", -1) is None
    long = legacy_variable_key("d" * 250, "t" * 250, "r", 0)
    assert long is not None
    assert len(long) <= VARIABLE_KEY_MAX_LENGTH


def _dag(dag_id: str, group: str | None, task_id: str) -> DAG:
    """A one-task DAG that fails its first status read (so its record stays), no retries."""
    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        kwargs: dict[str, Any] = {
            "task_id": task_id,
            "prompt": PROMPT,
            "first_frame_image_url": IMAGE,
            "poll_interval": 0.1,
            "retries": 0,
        }
        if group is None:
            SeedanceImageToVideoOperator(**kwargs)
        else:
            with TaskGroup(group):
                SeedanceImageToVideoOperator(**kwargs)
    return dag


@pytest.mark.usefixtures("airflow_db")
def test_a_dotted_dag_and_a_task_group_never_share_a_record(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DAG ``<p>.x`` / task ``gen`` and DAG ``<p>`` / task ``x.gen``, same run id, same input: two videos."""
    # The Variable store, as Airflow 3.0-3.2 use it (a no-op there; on 3.3 it replaces task_state_store).
    monkeypatch.setattr(_request_store, "task_state_store_from", lambda context: None)
    # One run id for both DAGs, as schedules give (dag.test() would name each run after its start time).
    from airflow.models.dagrun import DagRun

    monkeypatch.setattr(DagRun, "generate_run_id", staticmethod(lambda **_: RUN_ID))
    prefix = unique_dag_id("seedance_collide")
    emulator.set_plan(JobPlan(queue_seconds=0.5, run_seconds=0.3))
    # The first DAG's only try fails after its paid submit: its record stays behind.
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=401, times=1))
    dotted = _dag(f"{prefix}.x", None, "gen")
    store_serialized_dag(dotted)
    first = dotted.test()
    assert str(task_instances(first)[("gen", -1)].state) == "failed"

    grouped = _dag(prefix, "x", "gen")
    store_serialized_dag(grouped)
    second = grouped.test()

    assert first.run_id == second.run_id == RUN_ID
    assert str(task_instances(second)[("x.gen", -1)].state) == "success"
    # Its own paid request, not a re-attach to the first DAG's.
    assert emulator.state.count("submit") == 2
    first_request, second_request = (job.request_id for job in emulator.state.jobs())
    assert xcom(second, "x.gen")["request_id"] == second_request != first_request
