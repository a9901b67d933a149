"""The request store: what a try records so that the next one re-attaches instead of paying twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import DAG, TaskGroup

from airflow_provider_seedance.operators import _request_store
from airflow_provider_seedance.operators._request_store import (
    STATE_KEY,
    VARIABLE_KEY_MAX_LENGTH,
    StoredRequest,
    TaskStateRequestStore,
    VariableRequestStore,
    input_fingerprint,
    legacy_variable_key,
    request_store_for,
    variable_key,
)
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from tests._compat import store_serialized_dag
from tests.operators._dag_support import (
    IMAGE,
    MODEL,
    START,
    FakeTaskInstance,
    FakeTaskStateStore,
    make_context,
    task_instances,
    unique_dag_id,
    xcom,
)

BODY = {"prompt": "A red fox runs through fresh snow", "first_frame_image_url": "https://example.com/a.png"}
RECORD = StoredRequest(request_id="4f2c0d9e8b7a", model_id=MODEL, input_sha256=input_fingerprint(MODEL, BODY))
RETENTION = timedelta(days=9)


# -- the fingerprint of a submission -------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_only() -> None:
    reordered = dict(reversed(list(BODY.items())))
    assert input_fingerprint(MODEL, reordered) == input_fingerprint(MODEL, BODY)
    assert len(input_fingerprint(MODEL, BODY)) == 64


@pytest.mark.parametrize(
    ("model_id", "body"),
    [
        ("bytedance/seedance-v1-lite/image-to-video", BODY),
        (MODEL, {**BODY, "prompt": "A red fox runs through fresh snow."}),
        (MODEL, {**BODY, "duration": 5}),
        (MODEL, {**BODY, "duration": "5"}),
        (MODEL, {"prompt": BODY["prompt"]}),
    ],
    ids=["other-model", "other-prompt", "extra-field", "string-vs-int", "missing-field"],
)
def test_fingerprint_changes_with_the_model_or_any_input(model_id: str, body: dict[str, Any]) -> None:
    assert input_fingerprint(model_id, body) != input_fingerprint(MODEL, BODY)


def test_fingerprint_of_non_ascii_input_is_stable() -> None:
    body = {"prompt": "Un renard roux court dans la neige fraîche, 雪の中の狐"}
    assert input_fingerprint(MODEL, body) == input_fingerprint(MODEL, dict(body))


# -- what is stored, and what counts as nothing stored -------------------------------------------------------


def test_record_round_trips_as_json_and_as_text() -> None:
    assert StoredRequest.from_json(RECORD.to_json()) == RECORD
    assert StoredRequest.from_json(json.dumps(RECORD.to_json())) == RECORD


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "{not json",
        "[]",
        42,
        ["4f2c0d9e8b7a", MODEL],
        {"request_id": "4f2c0d9e8b7a", "model_id": MODEL},
        {"request_id": "../../etc/passwd", "model_id": MODEL, "input_sha256": "x"},
        {"request_id": "4f2c0d9e8b7a", "model_id": "../admin", "input_sha256": "x"},
        {"request_id": 42, "model_id": MODEL, "input_sha256": "x"},
        {"request_id": "4f2c0d9e8b7a", "model_id": MODEL, "input_sha256": None},
        {"request_id": "", "model_id": MODEL, "input_sha256": "x"},
    ],
    ids=[
        "none",
        "empty",
        "bad-json",
        "json-list",
        "number",
        "list",
        "no-digest",
        "path-in-id",
        "path-in-model",
        "id-not-text",
        "digest-not-text",
        "empty-id",
    ],
)
def test_malformed_records_count_as_nothing_stored(value: object) -> None:
    assert StoredRequest.from_json(value) is None


def test_a_record_matches_only_the_same_model_and_input() -> None:
    assert RECORD.matches(MODEL, RECORD.input_sha256)
    assert not RECORD.matches(MODEL, input_fingerprint(MODEL, {**BODY, "duration": 8}))
    assert not RECORD.matches("bytedance/seedance-v1-lite/image-to-video", RECORD.input_sha256)


# -- Airflow 3.3's task_state_store --------------------------------------------------------------------------


def test_task_state_store_saves_loads_and_discards_under_one_key() -> None:
    accessor = FakeTaskStateStore()
    store = TaskStateRequestStore(accessor, RETENTION)
    assert store.load() is None
    store.save(RECORD)
    assert accessor.values == {STATE_KEY: RECORD.to_json()}
    assert accessor.retentions == {STATE_KEY: RETENTION}
    assert store.load() == RECORD
    store.discard()
    assert accessor.deleted == [STATE_KEY]
    assert store.load() is None


def test_task_state_store_with_garbage_loads_nothing() -> None:
    accessor = FakeTaskStateStore(values={STATE_KEY: {"request_id": "../../etc", "model_id": MODEL}})
    assert TaskStateRequestStore(accessor, RETENTION).load() is None


def test_task_state_store_errors_propagate() -> None:
    # The operator decides what an unreadable store means (fail before submitting); the store hides nothing.
    with pytest.raises(RuntimeError, match="unavailable"):
        TaskStateRequestStore(FakeTaskStateStore(fail_get=True), RETENTION).load()


# -- choosing the store --------------------------------------------------------------------------------------


def test_task_state_store_is_preferred_when_airflow_has_it() -> None:
    accessor = FakeTaskStateStore()
    store = request_store_for(make_context(store=accessor), retention=RETENTION)
    assert isinstance(store, TaskStateRequestStore)
    assert (store.accessor, store.retention, store.description) == (accessor, RETENTION, "task_state_store")


def test_a_variable_per_task_instance_before_airflow_3_3() -> None:
    ti = FakeTaskInstance(dag_id="d", task_id="t", run_id="manual__1", map_index=2)
    store = request_store_for(make_context(ti), retention=RETENTION)
    assert isinstance(store, VariableRequestStore)
    assert store.key == variable_key("d", "t", "manual__1", 2)
    assert store.description == "Airflow Variable"


def test_a_task_instance_without_map_index_counts_as_unmapped() -> None:
    class BareTaskInstance:
        dag_id, task_id, run_id = "d", "t", "r"

    store = request_store_for({"task_instance": BareTaskInstance()}, retention=RETENTION)
    assert isinstance(store, VariableRequestStore)
    assert store.key == variable_key("d", "t", "r", -1)


def test_no_store_without_a_task_instance() -> None:
    assert request_store_for({}, retention=RETENTION) is None


def test_variable_store_reads_what_airflow_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    key = variable_key("d", "t", "r", -1)
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps(RECORD.to_json()))
    assert VariableRequestStore(key).load() == RECORD
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps({"request_id": "../x"}))
    assert VariableRequestStore(key).load() is None


# -- Variable keys (Airflow 3.0-3.2) -------------------------------------------------------------------------

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
