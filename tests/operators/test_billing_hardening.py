"""Issue 13 at operator level, against the emulator: never pay twice, deadlines in the worker, data: URIs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_seedance.exceptions import (
    SeedanceError,
    SeedanceInputError,
    SeedanceRequestFailedError,
    SeedanceRequestNotStoredError,
    SeedanceSubmissionStateUnknownError,
    SeedanceTimeoutError,
)
from airflow_provider_seedance.models import unsigned_url
from airflow_provider_seedance.operators._request_store import STATE_KEY, input_fingerprint
from airflow_provider_seedance.operators.seedance import (
    SeedanceImageToVideoOperator,
    SeedanceSubmitOperator,
    SeedanceV2ProOperator,
)
from airflow_provider_seedance.testing import Fault, JobPlan, SeedanceEmulator
from tests.operators._dag_support import (
    MODEL,
    CapturedLogs,
    FakeTaskInstance,
    FakeTaskStateStore,
    image_to_video,
    make_context,
    request_body,
    submit_request,
    wait_for,
)

PROMPT = "A heron lifts off a misty lake"
STUCK = JobPlan(queue_seconds=30, run_seconds=1, outcome="stuck_in_queue")
RUNNING = JobPlan(queue_seconds=0, run_seconds=30, outcome="stuck_running")
INSTANT = JobPlan(queue_seconds=0, run_seconds=0)
IMAGE = "https://bucket.example.com/frames/heron.png"


def i2v(image: str = IMAGE, **kwargs: Any) -> SeedanceImageToVideoOperator:
    return image_to_video(PROMPT, image, **kwargs)


def body_for(image: str = IMAGE) -> dict[str, Any]:
    return request_body(PROMPT, image)


def submit_directly(emulator: SeedanceEmulator, plan: JobPlan, image: str = IMAGE) -> str:
    return submit_request(emulator, body_for(image), plan)


def stored(request_id: str, image: str = IMAGE) -> FakeTaskStateStore:
    fingerprint = input_fingerprint(MODEL, body_for(image))
    return FakeTaskStateStore(
        values={STATE_KEY: {"request_id": request_id, "model_id": MODEL, "input_sha256": fingerprint}}
    )


def phase_of(emulator: SeedanceEmulator, request_id: str) -> str:
    return next(job.phase for job in emulator.state.jobs() if job.request_id == request_id)


def warnings(logs: CapturedLogs, text: str) -> list[str]:
    return [line for line in logs.lines(text) if "warning" in line.lower()[:60]]


# -- item 1: an answer naming a request id is a created request ----------------------------------------------


def test_a_2xx_with_id_and_error_is_followed_and_stored(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", body={"code": 500, "msg": "x"}))
    ti, store = FakeTaskInstance(), FakeTaskStateStore()
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(ti, store))
    [job] = emulator.state.jobs()
    assert deferred.value.trigger.request_id == job.request_id
    assert store.values[STATE_KEY]["request_id"] == job.request_id
    assert ti.xcom_values["request_id"] == job.request_id
    assert emulator.state.count("submit") == 1


def test_an_error_status_naming_an_id_is_stored_so_a_new_try_reattaches(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    emulator.add_fault(Fault(kind="payload_with_error", endpoint="submit", status_code=500))
    store = FakeTaskStateStore()
    with pytest.raises(SeedanceSubmissionStateUnknownError) as raised:
        i2v().execute(make_context(FakeTaskInstance(), store))
    [job] = emulator.state.jobs()
    assert job.request_id in str(raised.value)
    assert isinstance(raised.value, AirflowFailException)
    assert store.values[STATE_KEY]["request_id"] == job.request_id
    # A cleared task (a new try) re-attaches instead of paying again.
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(FakeTaskInstance(try_number=2), store))
    assert deferred.value.trigger.request_id == job.request_id
    assert emulator.state.count("submit") == 1


# -- item 2: a re-signed presigned URL is the same input; a changed input is never dropped silently ----------

SIGNED = {
    "s3-v4": (
        "https://b.s3.amazonaws.com/f/heron.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20250101"
        "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}",
        "https://b.s3.amazonaws.com/f/heron.png",
    ),
    "s3-v2": (
        "https://b.s3.amazonaws.com/f/heron.png?AWSAccessKeyId=AK&Expires={n}&Signature={sig}"
        "&x-amz-security-token=t{sig}",
        "https://b.s3.amazonaws.com/f/heron.png",
    ),
    "gcs-v4": (
        "https://storage.googleapis.com/b/heron.png?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa"
        "&X-Goog-Date=2025{n}&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature={sig}",
        "https://storage.googleapis.com/b/heron.png",
    ),
    "gcs-v2": (
        "https://storage.googleapis.com/b/heron.png?GoogleAccessId=sa&Expires={n}&Signature={sig}",
        "https://storage.googleapis.com/b/heron.png",
    ),
    "azure-sas": (
        "https://acct.blob.core.windows.net/c/heron.png?sv=2022-11-02&st={n}&se={n}9&sr=b&sp=r&sig={sig}",
        "https://acct.blob.core.windows.net/c/heron.png",
    ),
    "cloudfront": (
        "https://d1.cloudfront.net/heron.png?Expires={n}&Signature={sig}&Key-Pair-Id=K2",
        "https://d1.cloudfront.net/heron.png",
    ),
    "version-kept": (
        "https://b.s3.amazonaws.com/heron.png?versionId=v7&X-Amz-Date={n}&X-Amz-Signature={sig}",
        "https://b.s3.amazonaws.com/heron.png?versionId=v7",
    ),
    "firebase-token": (
        "https://firebasestorage.googleapis.com/v0/b/p/o/heron.png?alt=media&token={sig}",
        "https://firebasestorage.googleapis.com/v0/b/p/o/heron.png?alt=media",
    ),
}


@pytest.mark.parametrize("kind", SIGNED, ids=SIGNED)
def test_unsigned_url(kind: str) -> None:
    template, expected = SIGNED[kind]
    assert unsigned_url(template.format(n=1, sig="aa11")) == expected
    assert unsigned_url(template.format(n=2, sig="bb22")) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.png",
        "https://example.com/a.png?size=large&v=2",
        "https://example.com/a.png?sp=1&sr=2",  # Azure-like names, but no signature: not a SAS, kept
        "data:image/png;base64,iVBORw0KGgo=",
        "https://example.com/a.png#frag",
    ],
)
def test_unsigned_url_leaves_other_urls_byte_identical(url: str) -> None:
    assert unsigned_url(url) == url


def test_a_different_object_is_a_different_input() -> None:
    template, _ = SIGNED["s3-v4"]
    one = template.format(n=1, sig="aa")
    other = one.replace("heron.png", "crane.png")
    assert input_fingerprint(MODEL, body_for(one)) != input_fingerprint(MODEL, body_for(other))
    versioned, _ = SIGNED["version-kept"]
    assert input_fingerprint(MODEL, body_for(versioned.format(n=1, sig="a"))) != input_fingerprint(
        MODEL, body_for(versioned.format(n=1, sig="a").replace("v7", "v8"))
    )


@pytest.mark.parametrize("kind", ["s3-v4", "gcs-v4", "azure-sas"])
def test_a_retry_with_a_re_signed_url_reattaches(
    emulator: SeedanceEmulator, seedance_conn: str, kind: str
) -> None:
    template, _ = SIGNED[kind]
    first, again = template.format(n=1, sig="aa11"), template.format(n=2, sig="bb22")
    old = submit_directly(emulator, STUCK, first)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred) as deferred:
        i2v(again).execute(make_context(ti, stored(old, first)))
    assert deferred.value.trigger.request_id == old
    assert emulator.state.count("submit") == 1


def test_a_changed_input_cancels_the_old_request_while_queued(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs
) -> None:
    old = submit_directly(emulator, STUCK)
    store = stored(old)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred):
        i2v("https://bucket.example.com/frames/other.png").execute(make_context(ti, store))
    new = ti.xcom_values["request_id"]
    assert new != old
    assert phase_of(emulator, old) == "cancelled"
    assert store.values[STATE_KEY]["request_id"] == new
    assert len(warnings(logs, f"Seedance request {old} was submitted by an earlier try")) == 1


@pytest.mark.parametrize("plan", ["running", "succeeded"])
def test_a_changed_input_warns_that_the_old_request_goes_on(
    emulator: SeedanceEmulator, seedance_conn: str, logs: CapturedLogs, plan: str
) -> None:
    old = submit_directly(emulator, RUNNING if plan == "running" else INSTANT)
    wanted = "in_progress" if plan == "running" else "succeeded"
    wait_for(lambda: phase_of(emulator, old) == wanted)
    emulator.set_plan(STUCK)
    ti = FakeTaskInstance(try_number=2)
    with pytest.raises(TaskDeferred):
        i2v(duration=8).execute(make_context(ti, stored(old)))
    assert ti.xcom_values["request_id"] != old
    assert phase_of(emulator, old) == wanted  # never cancelled: it cannot be any more
    assert emulator.state.count("cancel") == 0
    lines = warnings(logs, f"Seedance request {old} was submitted by an earlier try")
    assert len(lines) == 1
    assert ("still generating" if plan == "running" else "already finished") in lines[0]


# -- item 4: an id that could not be stored makes later failures of the try non-retryable --------------------


def test_unstored_id_then_an_error_while_waiting_is_not_retried(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    emulator.set_plan(STUCK)
    emulator.add_fault(Fault(kind="http_error", endpoint="status", status_code=403, error_code=403001))
    with pytest.raises(SeedanceRequestNotStoredError) as raised:
        i2v(deferrable=False).execute(make_context(store=FakeTaskStateStore(fail_set=True)))
    [job] = emulator.state.jobs()
    assert isinstance(raised.value, AirflowFailException)
    assert raised.value.request_id == job.request_id
    assert job.request_id in str(raised.value)
    assert "NOT retried" in str(raised.value)
    assert isinstance(raised.value.__cause__, SeedanceRequestFailedError)


def test_unstored_id_then_a_timeout_is_not_retried(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    with pytest.raises(SeedanceRequestNotStoredError) as raised:
        i2v(deferrable=False, timeout=0.3).execute(make_context(store=FakeTaskStateStore(fail_set=True)))
    assert isinstance(raised.value.__cause__, SeedanceTimeoutError)


def test_unstored_id_then_a_failed_run_may_be_retried(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    # A retry replaces a failed request whether or not its id was stored: nothing is paid twice.
    emulator.set_plan(JobPlan(queue_seconds=0, run_seconds=0, outcome="fail", error="content policy"))
    with pytest.raises(SeedanceRequestFailedError) as raised:
        i2v(deferrable=False).execute(make_context(store=FakeTaskStateStore(fail_set=True)))
    assert not isinstance(raised.value, AirflowFailException)


def test_unstored_id_is_carried_through_the_deferral(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    emulator.set_plan(STUCK)
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        i2v().execute(make_context(ti, FakeTaskStateStore(fail_set=True)))
    kwargs = deferred.value.kwargs
    assert kwargs["stored"] is False
    event = {"status": "error", "request_id": kwargs["request_id"], "result": None, "message": "lost it"}
    with pytest.raises(SeedanceRequestNotStoredError, match=kwargs["request_id"]):
        i2v().execute_complete(make_context(ti, FakeTaskStateStore()), event=event, **kwargs)


@dataclass
class FailingReturnPush(FakeTaskInstance):
    """A task instance whose XCom backend fails on the return value (the request id push works)."""

    def xcom_push(self, key: str, value: Any) -> None:
        if key == "return_value":
            raise RuntimeError("XCom backend unavailable")
        super().xcom_push(key, value)


@pytest.mark.parametrize("wait", [False, True])
def test_the_record_outlives_a_failed_return_value_push(
    emulator: SeedanceEmulator, seedance_conn: str, wait: bool
) -> None:
    emulator.set_plan(INSTANT if wait else STUCK)
    store = FakeTaskStateStore()
    with pytest.raises(RuntimeError, match="XCom backend"):
        i2v(wait_for_completion=wait, deferrable=False).execute(make_context(FailingReturnPush(), store))
    [job] = emulator.state.jobs()
    assert store.values[STATE_KEY]["request_id"] == job.request_id
    assert store.deleted == []
    # The retry re-attaches instead of paying again.
    ti = FakeTaskInstance(try_number=2)
    result = i2v(wait_for_completion=wait, deferrable=False).execute(make_context(ti, store))
    assert result["request_id"] == job.request_id
    assert ti.xcom_values["return_value"] == result
    assert store.deleted == [STATE_KEY]
    assert emulator.state.count("submit") == 1


# -- item 14: in the worker, no retry wait crosses the deadline -------------------------------------------


def _run_bounded(action: Any, limit: float) -> BaseException | None:
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting {limit} s later: a retry wait crossed the deadline"
    return outcome[0]


@pytest.mark.parametrize("endpoint", ["status", "result"])
def test_retry_after_does_not_hold_the_worker_past_timeout(
    emulator: SeedanceEmulator, seedance_conn: str, endpoint: str
) -> None:
    emulator.set_plan(STUCK if endpoint == "status" else INSTANT)
    emulator.add_fault(
        Fault(kind="http_error", endpoint=endpoint, status_code=429, retry_after=120, times=None)  # type: ignore[arg-type]
    )
    started = time.monotonic()
    error = _run_bounded(
        lambda: i2v(deferrable=False, timeout=1.5).execute(make_context(store=FakeTaskStateStore())), 20
    )
    assert isinstance(error, SeedanceTimeoutError)
    assert time.monotonic() - started < 20


def test_reading_an_earlier_request_is_bounded_by_timeout(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    old = submit_directly(emulator, STUCK)
    emulator.add_fault(
        Fault(kind="http_error", endpoint="status", status_code=429, retry_after=120, times=None)
    )
    error = _run_bounded(
        lambda: i2v(deferrable=False, timeout=1.0).execute(make_context(store=stored(old))), 20
    )
    assert isinstance(error, SeedanceError)
    assert "Not submitting a second, paid request" in str(error)
    assert emulator.state.count("submit") == 1


# -- item 16: data: URIs carry a real base64 payload --------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("data:image/png;base64,", "payload is empty"),
        ("data:image/png;base64,   ", "payload is empty"),
        ("data:image/png;base64,==", "payload is empty"),
        ("data:image/png;base64,not base64!", "valid base64"),
        ("data:image/png;base64,iVBORw0K*GgoAAAANSUhEUg==", "valid base64"),
        ("data:image/png;base64,A", "valid base64"),
        ("data:image/png;base64,iVBORw0KGgo===", "valid base64"),
        ("data:image/png;base64,AB=C", "valid base64"),
        ("data:image/;base64,iVBORw0KGgo=", "data:image/<type>;base64,<data>"),
        ("data:text/plain;base64,aGVsbG8=", "data:image/<type>;base64,<data>"),
        ("data:image/png,rawbytes", "data:image/<type>;base64,<data>"),
    ],
)
def test_bad_data_uris_fail_before_any_request(
    emulator: SeedanceEmulator, seedance_conn: str, uri: str, rule: str
) -> None:
    with pytest.raises(SeedanceInputError) as raised:
        i2v(uri).execute(make_context(store=FakeTaskStateStore()))
    assert "first_frame_image_url" in str(raised.value)
    assert rule in str(raised.value)
    assert emulator.state.requests() == []


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/png;base64,iVBORw0KGgo",  # padding is optional, as browsers read data: URLs
        "data:image/jpeg;base64,/9j/4AAQ\nSkZJRg==",  # line-wrapped base64
        "data:image/png;name=frame.png;base64,iVBORw0KGgo=",
        "DATA:IMAGE/PNG;BASE64,iVBORw0KGgo=",
    ],
)
def test_good_data_uris_are_sent_as_written(emulator: SeedanceEmulator, seedance_conn: str, uri: str) -> None:
    emulator.set_plan(STUCK)
    with pytest.raises(TaskDeferred):
        i2v(uri).execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests("submit")[0].body["first_frame_image_url"] == uri


def test_the_data_uri_rule_holds_for_every_typed_model(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    with pytest.raises(SeedanceInputError, match=r"image_url\.1: .*payload is empty"):
        SeedanceV2ProOperator(
            task_id="v2", prompt=PROMPT, image_url=[IMAGE, "data:image/png;base64,"]
        ).execute(make_context(store=FakeTaskStateStore()))
    with pytest.raises(SeedanceInputError, match=r"image: .*valid base64"):
        SeedanceSubmitOperator(
            task_id="generic",
            model_id="bytedance/seedance-2.5/image-to-video/480p",
            input={"prompt": PROMPT, "image": "data:image/png;base64,%%%"},
            validate_input=True,
        ).execute(make_context(store=FakeTaskStateStore()))
    assert emulator.state.requests() == []
