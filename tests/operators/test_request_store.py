"""The request store: what a try records so that the next one re-attaches instead of paying twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_seedance.operators._request_store import (
    STATE_KEY,
    VARIABLE_KEY_MAX_LENGTH,
    StoredRequest,
    TaskStateRequestStore,
    VariableRequestStore,
    input_fingerprint,
    request_store_for,
    variable_key,
)
from tests.operators._dag_support import MODEL, FakeTaskInstance, FakeTaskStateStore, make_context

BODY = {"prompt": "A red fox runs through fresh snow", "first_frame_image_url": "https://example.com/a.png"}
RECORD = StoredRequest(request_id="4f2c0d9e8b7a", model_id=MODEL, input_sha256=input_fingerprint(MODEL, BODY))
RETENTION = timedelta(days=9)


# -- the fingerprint of a submission ---------------------------------------------------------------------------


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


# -- what is stored, and what counts as nothing stored -------------------------------------------------------------


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


# -- Airflow 3.3's task_state_store ----------------------------------------------------------------------------------


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


# -- choosing the store ------------------------------------------------------------------------------------------


def test_task_state_store_is_preferred_when_airflow_has_it() -> None:
    accessor = FakeTaskStateStore()
    store = request_store_for(make_context(store=accessor), retention=RETENTION)
    assert isinstance(store, TaskStateRequestStore)
    assert (store.accessor, store.retention, store.description) == (accessor, RETENTION, "task_state_store")


def test_a_variable_per_task_instance_before_airflow_3_3() -> None:
    ti = FakeTaskInstance(dag_id="d", task_id="t", run_id="manual__1", map_index=2)
    store = request_store_for(make_context(ti), retention=RETENTION)
    assert isinstance(store, VariableRequestStore)
    assert store.key == variable_key("d", "t", "manual__1", 2) == "seedance_request.d.t.manual__1.2"
    assert store.description == "Airflow Variable"


def test_a_task_instance_without_map_index_counts_as_unmapped() -> None:
    class BareTaskInstance:
        dag_id, task_id, run_id = "d", "t", "r"

    store = request_store_for({"task_instance": BareTaskInstance()}, retention=RETENTION)
    assert isinstance(store, VariableRequestStore)
    assert store.key == "seedance_request.d.t.r.-1"


def test_no_store_without_a_task_instance() -> None:
    assert request_store_for({}, retention=RETENTION) is None


def test_variable_store_reads_what_airflow_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    key = variable_key("d", "t", "r", -1)
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps(RECORD.to_json()))
    assert VariableRequestStore(key).load() == RECORD
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps({"request_id": "../x"}))
    assert VariableRequestStore(key).load() is None


def test_variable_key_is_per_task_instance_and_bounded() -> None:
    assert variable_key("d", "t", "manual__2025", -1) == "seedance_request.d.t.manual__2025.-1"
    assert variable_key("d", "t", "r", 3) != variable_key("d", "t", "r", 4)
    long = variable_key("d" * 250, "t" * 250, "r", 0)
    assert len(long) <= 250
    assert long != variable_key("d" * 250, "t" * 250, "r", 1)


SCHEDULED = "scheduled__2025-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("d" * 200, "t", "run_a", -1), ("d" * 200, "t", "run_b", -1)),
        # A task in a task group ("b.c") of DAG "a", and task "c" of DAG "a.b": same scheduled run id.
        (("a", "b.c", SCHEDULED, -1), ("a.b", "c", SCHEDULED, -1)),
        (("a", "b.c", "r", -1), ("a", "b", "c.r", -1)),
    ],
    ids=["long-ids-other-runs", "task-group-vs-dotted-dag", "task-group-vs-dotted-run"],
)
def test_variable_keys_of_different_task_instances_differ(
    first: tuple[str, str, str, int], second: tuple[str, str, str, int]
) -> None:
    assert len(variable_key(*first)) <= VARIABLE_KEY_MAX_LENGTH
    assert variable_key(*first) != variable_key(*second)


def test_variable_key_none_map_index_is_unmapped() -> None:
    assert variable_key("d", "t", "r", None) == variable_key("d", "t", "r", -1)


def test_a_task_group_task_key_stays_readable_and_bounded() -> None:
    key = variable_key("my_dag", "group.generate", SCHEDULED, -1)
    assert key.startswith("seedance_request.my_dag.group.generate.")
    assert len(key) <= VARIABLE_KEY_MAX_LENGTH
    assert key == variable_key("my_dag", "group.generate", SCHEDULED, -1)
