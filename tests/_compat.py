"""What the tests do differently per Airflow release (the package's own differences: ``version_compat``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from airflow_provider_seedance.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS


def dag_bag(dag_folder: Path) -> Any:
    """
    Parse a DAG file or folder the way the dag-processor does.

    ``DagBag`` moved to ``airflow.dag_processing.dagbag`` in Airflow 3.2 (``airflow.models.dagbag`` before).

    :param dag_folder: the file or folder to parse.
    """
    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag  # type: ignore[attr-defined,no-redef]
    return DagBag(dag_folder=str(dag_folder))


def store_serialized_dag(dag: Any) -> None:
    """
    Write ``dag`` into the metadata DB as the dag-processor would (``dag.test()`` needs it serialized).

    Airflow 3.1 added ``LazyDeserializedDAG.from_dag`` and the ``parse_duration`` argument of
    ``update_dag_parsing_results_in_db``.

    :param dag: the DAG.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG, SerializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    if AIRFLOW_V_3_1_PLUS:
        lazy, timing = LazyDeserializedDAG.from_dag(dag), {"parse_duration": None}
    else:
        # As 3.0's DagBag does for a file outside any bundle; the DAG table needs it.
        if dag.relative_fileloc is None:
            dag.relative_fileloc = dag.fileloc
        lazy, timing = LazyDeserializedDAG(data=SerializedDAG.to_dict(dag)), {}
    with create_session() as session:
        update_dag_parsing_results_in_db(
            bundle_name="dags-folder",
            bundle_version=None,
            dags=[lazy],
            import_errors={},
            warnings=set(),
            session=session,
            **timing,
        )


def without_dag_test_mask_echo(log_text: str) -> str:
    """
    Drop the lines in which Airflow 3.0's ``dag.test()`` echoes each secret it is asked to mask.

    ``dag.test()`` talks to an in-process supervisor that logs every message at DEBUG, ``MaskSecret`` (the
    connection's password) included, and 3.0 renders that line without its secrets masker; the real
    supervisor does not log it, and 3.1+ redact it. Any other line holding a secret still fails the audit.

    :param log_text: the captured log lines.
    """
    if AIRFLOW_V_3_1_PLUS:
        return log_text
    echo = re.compile(r"Sending request\b.*\bmsg=\S*MaskSecret\(")  # colours may sit between the two
    return "\n".join(line for line in log_text.splitlines() if not echo.search(line))
