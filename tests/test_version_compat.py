"""Each difference between the supported Airflow releases, exercised on the releases that have it.

``python3 dev.py test`` runs this module on every release of the matrix (``AIRFLOW_RELEASES`` in dev.py):
each test takes the branch its release needs, so removing a branch fails the releases that use it. The
real-triggerer branch (``aget_connection`` on 3.0) is proven by the flagship system test the matrix runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from airflow.sdk import DAG

from airflow_provider_seedance import version_compat
from airflow_provider_seedance.exceptions import SeedanceTimeoutError
from airflow_provider_seedance.get_provider_info import CONN_FIELDS, DEFAULT_BASE_URL
from airflow_provider_seedance.hooks.seedance import SeedanceHook
from airflow_provider_seedance.models import SEEDANCE_1_5_PRO_I2V_MODEL_ID
from airflow_provider_seedance.operators.seedance import SeedanceImageToVideoOperator, SeedanceVideoLink
from airflow_provider_seedance.testing import JobPlan, SeedanceEmulator
from tests._support import TEST_TOKEN
from tests.operators._dag_support import (
    IMAGE,
    START,
    FakeTaskInstance,
    assert_retry_reattaches_through_a_variable,
    make_context,
    run_dag,
    spy_variable_saves,
    unique_dag_id,
    xcom,
)

PROMPT = "A lighthouse in a storm, waves crashing"


def _i2v_dag(name: str, **op_kwargs: Any) -> DAG:
    with DAG(unique_dag_id(name), schedule=None, start_date=START, catchup=False) as dag:
        SeedanceImageToVideoOperator(
            task_id="generate", prompt=PROMPT, first_frame_image_url=IMAGE, poll_interval=0.1, **op_kwargs
        )
    return dag


def test_release_flags_follow_the_installed_airflow() -> None:
    major, minor = (int(part) for part in airflow_version.split(".")[:2])
    assert major == 3
    assert version_compat.AIRFLOW_V_3_1_PLUS is (minor >= 1)
    assert version_compat.AIRFLOW_V_3_2_PLUS is (minor >= 2)
    assert version_compat.AIRFLOW_V_3_3_PLUS is (minor >= 3)


_FORM_SCRIPT = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

[form] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "seedance"]
std = form.standard_fields
print(json.dumps({
    "extra_fields": form.extra_fields,
    "standard": {
        name: None if getattr(std, name) is None else getattr(std, name).model_dump()
        for name in ("password", "host", "login", "port", "url_schema")
    },
}))
"""


def test_the_api_server_renders_the_connection_form() -> None:
    """3.0/3.1 build the form from the hook's methods (wtforms), 3.2+ from the provider info."""
    # In a fresh interpreter, as the API server builds it: an earlier test of this process may have
    # loaded the providers' hooks outside the API server's wtforms stand-ins, which the form would keep.
    done = subprocess.run(
        [sys.executable, "-c", _FORM_SCRIPT], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    form = json.loads(done.stdout.strip().splitlines()[-1])

    extra_fields = form["extra_fields"]
    assert extra_fields is not None
    assert set(extra_fields) == set(CONN_FIELDS)
    for name, spec in CONN_FIELDS.items():
        field = extra_fields[name]
        assert field["schema"]["title"] == spec["label"], field
        assert field["description"] == spec["description"], field
        assert "null" in field["schema"]["type"], field  # optional: the hook's defaults apply
    assert extra_fields["max_retries"]["schema"]["type"][0] == "integer"
    fields = form["standard"]
    assert fields["password"] is not None
    assert fields["password"]["title"] == "API token"
    assert fields["host"] is not None
    assert (fields["host"]["title"], fields["host"]["placeholder"]) == ("Base URL", DEFAULT_BASE_URL)
    for hidden in ("login", "port", "url_schema"):
        assert fields[hidden] is not None
        assert fields[hidden]["hidden"]


def test_deferral_timeout_fails_clearly_and_cancels_the_queued_request(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    """Airflow 3.2 raises ``TaskDeferralTimeout`` from ``airflow.sdk.exceptions``, 3.0/3.1 from core."""
    from airflow.sdk.bases.operator import TriggerFailureReason

    emulator.set_plan(JobPlan(queue_seconds=60, run_seconds=1))
    hook = SeedanceHook()
    try:
        request_id = hook.submit(
            SEEDANCE_1_5_PRO_I2V_MODEL_ID, {"prompt": PROMPT, "first_frame_image_url": IMAGE}
        ).request_id
    finally:
        hook.close()
    op = SeedanceImageToVideoOperator(task_id="generate", prompt=PROMPT, first_frame_image_url=IMAGE)
    context = make_context(FakeTaskInstance(xcom_values={"request_id": request_id}))

    with pytest.raises(SeedanceTimeoutError, match="deferral timed out"):
        op.resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context)

    (job,) = emulator.state.jobs()
    assert job.phase == "cancelled"
    assert emulator.state.count("submit") == 1


@pytest.mark.usefixtures("airflow_db")
def test_the_extra_link_is_pushed_for_the_api_server(emulator: SeedanceEmulator, seedance_conn: str) -> None:
    """The API server of every 3.x serves the link the worker pushed under the link's XCom key."""
    dag_run = run_dag(_i2v_dag("seedance_compat_link", deferrable=False))

    result = xcom(dag_run, "generate")
    assert result["status"] == "succeeded"
    assert xcom(dag_run, "generate", key=SeedanceVideoLink().xcom_key) == result["video_url"]


@pytest.mark.skipif(version_compat.AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3+ keeps it in task_state_store")
@pytest.mark.usefixtures("airflow_db")
def test_a_retry_reattaches_through_the_variable_store(
    emulator: SeedanceEmulator, seedance_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow 3.0-3.2 have no ``task_state_store``: the request id survives the failed try in a Variable."""
    keys = spy_variable_saves(monkeypatch, keep_task_state_store=True)
    dag = _i2v_dag("seedance_compat_retry", retries=1, retry_delay=timedelta(0))
    assert_retry_reattaches_through_a_variable(emulator, dag, keys)


async def test_the_hook_resolves_its_connection_inside_the_event_loop(
    emulator: SeedanceEmulator, seedance_conn: str
) -> None:
    """3.1+ use ``BaseHook.aget_connection``; 3.0 runs the sync lookup in a thread."""
    config = await SeedanceHook().aget_config()
    assert config.base_url == emulator.url("").rstrip("/")
    assert config.token == TEST_TOKEN
