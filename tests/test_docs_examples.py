"""Every ```python block of README.md and docs/*.md is executed, so the examples cannot rot.

How a page runs:

* Each block is written to a ``.py`` file in a temporary working directory and run with ``runpy`` as
  ``__main__``, with ``AIRFLOW_CONN_SEEDANCE_DEFAULT`` pointing at the API emulator (fixture ``emulator``,
  via ``seedance_conn``), an Airflow metadata DB (``airflow_db``) and an in-process moto S3 in which every
  bucket the page names (``s3://<bucket>/...``, ``dest_bucket="<bucket>"``) exists.
* Blocks run in a fresh namespace each, except on the pages of :data:`PAGE_SESSIONS`, whose snippets
  continue one another (as a reader would type them into one session): there every block of the page
  shares one namespace, in page order.
* :data:`PAGE_SETUP` gives a page the names its fragments assume without defining them (like Sphinx's
  ``testsetup``).
* DAGs defined by the blocks of :data:`RUN_DAGS` are also run end to end with ``dag.test()``; every other
  DAG-defining block must at least define its DAG without error.
* Blocks that cannot run are listed in :data:`SKIP` by page and index (0-based among the page's python
  blocks) with the reason. Pseudo-code in new docs uses another fence (```text) instead.

Environment variables and the working directory are restored after each page.
"""

from __future__ import annotations

import os
import re
import runpy
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests._compat import store_serialized_dag

if TYPE_CHECKING:
    from airflow_provider_seedance.testing import SeedanceEmulator

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SKIP: dict[tuple[str, int], str] = {
    ("emulator.md", 4): "an assertion fragment about an emulator that has seen exactly one submit; the "
    "page's runnable hook example (block 5) makes the same kind of checks",
    ("transfer.md", 1): "pseudo-code inside a list item: `SeedanceToS3Operator(..., outlets=...)` elides "
    "the required arguments",
    ("models-and-cost.md", 2): "downloads https://example.com/frame.png (a real network call); the image "
    "checks are covered by tests/test_image_checks.py",
}
"""Blocks that are not run, by (page, index among its python blocks), with the reason."""

PAGE_SESSIONS = {"emulator.md"}
"""Pages whose blocks share one namespace, in order (later snippets use the ``emulator`` of earlier ones)."""

PAGE_SETUP: dict[str, str] = {
    "models-and-cost.md": textwrap.dedent(
        """
        from airflow_provider_seedance.hooks.seedance import SeedanceHook

        hook = SeedanceHook()
        model_id = "bytedance/seedance-v1.5-pro/image-to-video"
        body = {"prompt": "A fox runs", "first_frame_image_url": "https://example.com/f.png", "duration": 5}
        """
    ),
}
"""Names a page's fragments assume (``check_budget(hook, model_id, body, ...)``)."""

RUN_DAGS = {
    ("README.md", 0),
    ("operators.md", 0),
    ("operators.md", 2),
    ("trigger-and-sensor.md", 1),
    ("transfer.md", 0),
}
"""Blocks whose DAGs are also run with ``dag.test()`` against the emulator (and moto)."""

EXTRA_BUCKETS = {"my-bucket", "my-video-bucket", "seedance-demo"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_BUCKET = re.compile(r"""s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])|dest_bucket\s*=\s*["']([a-z0-9.-]+)["']""")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: str
    index: int
    line: int
    language: str
    source: str


def fenced_blocks(path: Path) -> list[Block]:
    """
    Return every fenced block of ``path`` with its language (the first word of the info string).

    Indented fences (inside list items) are found too; their content is dedented.

    :param path: the Markdown file.
    """
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    counters: dict[str, int] = {}
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        language = (match["info"].strip().split() or [""])[0].lower()
        start = i + 1
        j = start
        while j < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]
        ):
            j += 1
        body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[start:j]]
        index = counters.get(language, 0)
        counters[language] = index + 1
        blocks.append(Block(path.name, index, start, language, textwrap.dedent("\n".join(body)) + "\n"))
        i = j + 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    """Return the ```python (or ```py) blocks of ``path``, in page order."""
    return [block for block in fenced_blocks(path) if block.language in ("python", "py", "python3")]


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_environment(tmp_path: Path) -> Iterator[Path]:
    """Run in an empty working directory; restore ``os.environ`` and the directory afterwards."""
    saved_env = dict(os.environ)
    saved_cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def s3_buckets() -> Iterator[Any]:
    """An in-process moto S3; the test creates the buckets a page names."""
    import boto3
    from moto import mock_aws

    os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


def run_dag(dag: Any) -> Any:
    """Serialise ``dag`` into the metadata DB as the dag-processor would, then run it with ``dag.test()``."""
    store_serialized_dag(dag)
    return dag.test()


def _dags(namespace: dict[str, Any]) -> list[Any]:
    """Return the DAGs a block defined: bound to a name, or reachable from a task or an XComArg it bound."""
    from airflow.sdk import DAG, BaseOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator
    from airflow.sdk.definitions.xcom_arg import XComArg

    found: dict[int, Any] = {}
    for value in namespace.values():
        if isinstance(value, XComArg):
            value = getattr(value, "operator", None)
        if isinstance(value, (BaseOperator, MappedOperator)):
            value = value.dag if value.has_dag() else None
        if isinstance(value, DAG):
            found[id(value)] = value
    return list(found.values())


# ---------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------


def test_the_pages_have_examples() -> None:
    """The collector finds the python blocks (a broken regex must not make the suite vacuous)."""
    counts = {path.name: len(python_blocks(path)) for path in PAGES}
    assert counts["README.md"] >= 1
    assert sum(counts.values()) >= 20, counts
    for page, index in SKIP:
        assert index < counts.get(page, 0), f"SKIP names block {index} of {page}, which does not exist"
    for page, index in RUN_DAGS:
        assert index < counts.get(page, 0), f"RUN_DAGS names block {index} of {page}, which does not exist"


def test_readme_quickstart_is_unchanged() -> None:
    """The README's first ```bash block is the two commands of the quickstart, exactly."""
    first_bash = next(b for b in fenced_blocks(ROOT / "README.md") if b.language == "bash")
    assert first_bash.source.strip().splitlines() == ["python3 dev.py demo", "python3 dev.py test"]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("path", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(
    path: Path,
    clean_environment: Path,
    emulator: SeedanceEmulator,
    seedance_conn: str,
    s3_buckets: Any,
) -> None:
    text = path.read_text(encoding="utf-8")
    for match in _BUCKET.finditer(text):
        bucket = match.group(1) or match.group(2)
        if "{" not in bucket:
            s3_buckets.create_bucket(Bucket=bucket)
    for bucket in EXTRA_BUCKETS:
        s3_buckets.create_bucket(Bucket=bucket)

    page = path.name
    session: dict[str, Any] = {}
    if page in PAGE_SETUP:
        exec(compile(PAGE_SETUP[page], f"<setup of {page}>", "exec"), session)
    ran = 0
    for block in python_blocks(path):
        if (page, block.index) in SKIP:
            continue
        script = clean_environment / f"{path.stem}_{block.index}.py"
        script.write_text(block.source, encoding="utf-8")
        init = dict(session) if (page in PAGE_SESSIONS or page in PAGE_SETUP) else {}
        try:
            namespace = runpy.run_path(str(script), init_globals=init, run_name="__main__")
        except BaseException as exc:
            pytest.fail(
                f"{page} python block {block.index} (line {block.line}) raised "
                f"{type(exc).__name__}: {exc}\n---\n{block.source}---"
            )
        if page in PAGE_SESSIONS:
            session = {k: v for k, v in namespace.items() if not k.startswith("__")}
        if (page, block.index) in RUN_DAGS:
            dags = _dags(namespace)
            assert dags, f"{page} block {block.index} is listed in RUN_DAGS but defines no DAG"
            for dag in dags:
                dag_run = run_dag(dag)
                assert dag_run.state == "success", (
                    f"{page} block {block.index}: dag.test() of {dag.dag_id} ended {dag_run.state}"
                )
        ran += 1
    assert ran, f"every python block of {page} is skipped"


# ---------------------------------------------------------------------------------------------------------
# The reference pages name every parameter and every exception the code has
# ---------------------------------------------------------------------------------------------------------

REFERENCE: list[tuple[str, str, str]] = [
    ("operators.md", "airflow_provider_seedance.operators.seedance", "SeedanceBaseOperator"),
    ("operators.md", "airflow_provider_seedance.operators.seedance", "SeedanceImageToVideoOperator"),
    ("operators.md", "airflow_provider_seedance.operators.seedance", "SeedanceSubmitOperator"),
    ("trigger-and-sensor.md", "airflow_provider_seedance.triggers.seedance", "SeedanceRequestTrigger"),
    ("trigger-and-sensor.md", "airflow_provider_seedance.sensors.seedance", "SeedanceRequestSensor"),
    ("connection.md", "airflow_provider_seedance.hooks.seedance", "SeedanceHook"),
]


@pytest.mark.parametrize(("page", "module", "name"), REFERENCE, ids=lambda v: str(v).rsplit(".", 1)[-1])
def test_reference_pages_name_every_parameter(page: str, module: str, name: str) -> None:
    import importlib
    import inspect

    cls = getattr(importlib.import_module(module), name)
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    params = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    missing = [p for p in params if f"`{p}`" not in text and f"{p}=" not in text]
    assert not missing, f"{page} does not document {name}'s parameters {missing}"


def test_troubleshooting_names_every_exception_and_error_code() -> None:
    from airflow_provider_seedance import exceptions

    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    missing = [name for name in exceptions.__all__ if f"`{name}`" not in text]
    assert not missing, f"troubleshooting.md does not explain {missing}"
    for code in ("400001", "403001", "404001", "400002", "400004", "401", "402", "429", "5xx"):
        assert code in text, code


def test_the_connection_extras_are_documented() -> None:
    from airflow_provider_seedance.get_provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    text = (ROOT / "docs" / "connection.md").read_text(encoding="utf-8")
    for extra, field in conn_type["conn-fields"].items():
        assert f"`{extra}`" in text, extra
        assert field["label"] in text, field["label"]
    for label in conn_type["ui-field-behaviour"]["relabeling"].values():
        assert label in text, label
