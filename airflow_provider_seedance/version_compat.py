"""
What differs between the supported Airflow releases (3.0 to 3.3) that ``common.compat`` does not cover.

Names that only moved between modules come from ``airflow.providers.common.compat.sdk`` (the layer the
Apache providers use). This module holds the rest, one name per difference, each saying which releases
behave how. docs/compatibility.md lists them with the tests that prove each branch on its releases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow import __version__ as _airflow_version
from packaging.version import Version

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseHook, BaseSensorOperator, Connection

_T = TypeVar("_T")


def _base_version() -> tuple[int, int, int]:
    version = Version(_airflow_version)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_1_PLUS = _base_version() >= (3, 1, 0)
AIRFLOW_V_3_2_PLUS = _base_version() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS = _base_version() >= (3, 3, 0)

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk.exceptions import TaskDeferralTimeout
else:
    from airflow.exceptions import TaskDeferralTimeout  # type: ignore[attr-defined,no-redef]
"""
``TaskDeferralTimeout``, raised by ``resume_execution`` when a deferral outlives its ``timeout``.

Airflow 3.2 moved it to ``airflow.sdk.exceptions`` (where 3.3 raises it); 3.0 and 3.1 raise the one in
``airflow.exceptions``. ``common.compat`` has no entry for it.
"""


async def aget_connection(hook: BaseHook, conn_id: str) -> Connection:
    """
    Look a connection up from inside an event loop (the triggerer's) without blocking it.

    Airflow 3.1 added ``BaseHook.aget_connection``. Airflow 3.0 has only the sync lookup, which talks to
    the supervisor over a blocking channel: it runs in a worker thread there (asgiref's ``sync_to_async``,
    as 3.1's own implementation does).

    :param hook: the hook whose ``get_connection`` to use.
    :param conn_id: the connection id.
    """
    if AIRFLOW_V_3_1_PLUS:
        return await hook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)


def resume_sensor(sensor: BaseSensorOperator, resume: Callable[[], _T]) -> _T:
    """
    Run a sensor's ``BaseSensorOperator.resume_execution`` with the failure handling of Airflow 3.1+.

    From Airflow 3.1, a resumed sensor that fails (its deferral timed out, its trigger reported an error) is
    skipped under ``never_fail`` as well as ``soft_fail``, as a poking sensor is. Airflow 3.0 skips it only
    under ``soft_fail``, and not even then on a deferral timeout: this applies both flags there too, so a
    failure gets the same outcome before and after deferral on every release.

    :param sensor: the sensor resuming.
    :param resume: the call of ``BaseSensorOperator.resume_execution``.
    """
    if AIRFLOW_V_3_1_PLUS:
        return resume()
    from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException

    try:
        return resume()
    except AirflowSkipException:
        raise
    except AirflowException as err:  # AirflowSensorTimeout and TaskDeferralError included
        for flag in ("soft_fail", "never_fail"):
            if getattr(sensor, flag, False):
                raise AirflowSkipException(f"Skipping due to {flag} is set to True.") from err
        raise


def hook_field_behaviour(behaviour: Mapping[str, Any]) -> dict[str, Any]:
    """
    Return the provider info's ``ui-field-behaviour`` in the form ``BaseHook.get_ui_field_behaviour`` returns.

    Airflow 3.2 reads the connection form from the provider info (``ui-field-behaviour``, ``conn-fields``)
    and no longer calls the hook's methods; 3.0 and 3.1 read the form only from the hook's
    ``get_ui_field_behaviour`` and ``get_connection_form_widgets`` (and only when ``wtforms`` imports). The
    hook derives both from the provider info, so the form is written once.

    :param behaviour: the ``ui-field-behaviour`` mapping (hyphenated keys).
    """
    return {key.replace("-", "_"): value for key, value in behaviour.items()}


def hook_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """
    Return the provider info's ``conn-fields`` as the wtforms fields ``get_connection_form_widgets`` returns.

    For Airflow 3.0 and 3.1 (see :func:`hook_field_behaviour`). Their API server swaps the wtforms classes
    for stand-ins that turn each field into a JSON-schema param, so only the label, the description, the
    type (``integer`` -> ``IntegerField``, else ``StringField``) and ``Optional`` matter. ``wtforms`` is an
    optional package there: the ``ImportError`` without it is what Airflow expects and logs.

    :param conn_fields: the ``conn-fields`` mapping: name -> ``label``, ``description``, ``schema``.
    """
    from wtforms import IntegerField, StringField
    from wtforms.validators import Optional

    widgets: dict[str, Any] = {}
    for name, spec in conn_fields.items():
        types = spec["schema"]["type"]
        field = IntegerField if "integer" in (types if isinstance(types, list) else [types]) else StringField
        widgets[name] = field(spec["label"], description=spec.get("description", ""), validators=[Optional()])
    return widgets


__all__ = [
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "TaskDeferralTimeout",
    "aget_connection",
    "hook_field_behaviour",
    "hook_form_widgets",
    "resume_sensor",
]
