"""Helpers shared by the benchmarks: statistics, Markdown tables, environment notes, subprocess settings.

Only the standard library is imported here (psutil lazily), so a benchmark's orchestrator stays light and its
measured worker processes import exactly what they measure.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The one free-port helper, for the benchmarks that start servers.
from airflow_provider_seedance.testing.local_airflow import free_port as free_port

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""

RESULTS_DIR = ROOT / "benchmarks" / "results"
"""Where the benchmarks write their Markdown results."""

PYTHON = sys.executable
"""The interpreter that runs the worker processes (the venv's, when the benchmark is run with it)."""


def percentile(values: Sequence[float], pct: float) -> float:
    """
    Return the ``pct`` percentile of ``values`` (linear interpolation between closest ranks); NaN when empty.

    :param values: the samples.
    :param pct: 0..100.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    """
    Return the median of ``values`` (NaN when empty).

    :param values: the samples.
    """
    return percentile(values, 50.0)


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    """
    Format a number for a table cell; ``None``/NaN become ``n/a``.

    :param value: the number.
    :param digits: decimals.
    :param unit: appended after a space when given.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """
    Render a GitHub Markdown table (first column left-aligned, the others right-aligned).

    :param headers: the column titles.
    :param rows: the rows, one value per column (converted with ``str``).
    """
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def side_by_side(labels: Sequence[str], metrics: Sequence[tuple[str, Sequence[str]]]) -> str:
    """
    Render metrics as rows and variants as columns, for a side-by-side comparison.

    :param labels: the variant names (columns after the metric name).
    :param metrics: ``(metric name, one cell per variant)`` pairs.
    """
    return markdown_table(["metric", *labels], [[name, *cells] for name, cells in metrics])


def verdict(met: bool | None) -> str:
    """
    Render whether a target is met.

    :param met: ``True``, ``False`` or ``None`` (not measured).
    """
    if met is None:
        return "not measured"
    return "met" if met else "NOT met"


def machine_notes() -> dict[str, str]:
    """Describe the machine and software a run happened on (for the results files)."""
    notes = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": str(os.cpu_count()),
    }
    with contextlib.suppress(OSError):
        notes["load average (1/5/15 min) at start"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    with contextlib.suppress(Exception):
        import psutil

        notes["memory"] = f"{psutil.virtual_memory().total / 1024**3:.1f} GiB"
    versions = []
    for dist in ("apache-airflow", "apache-airflow-task-sdk", "httpx", "httpcore", "uvicorn", "fastapi"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
    notes["packages"] = ", ".join(versions)
    return notes


def finish_notes(notes: dict[str, str]) -> dict[str, str]:
    """
    Add the load average at the end of a run to notes taken by :func:`machine_notes` at its start.

    :param notes: the notes (changed in place and returned).
    """
    with contextlib.suppress(OSError):
        notes["load average (1/5/15 min) at end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return notes


def notes_block(notes: Mapping[str, str]) -> str:
    """
    Render environment notes as a Markdown list.

    :param notes: name -> value.
    """
    return "\n".join(f"- {name}: {value}" for name, value in notes.items())


def loadavg() -> str:
    """Return the 1-minute load average as text (``n/a`` where the OS has none)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def pycache_env(env: dict[str, str]) -> dict[str, str]:
    """
    Let worker processes cache bytecode even when ``PYTHONDONTWRITEBYTECODE`` is set, outside the source tree.

    Without it every process compiles Airflow from source (seconds each), which would dominate every figure
    and is not how a deployment runs (pip compiles bytecode at install time). The cache is the one
    :class:`~airflow_provider_seedance.testing.local_airflow.LocalAirflow` uses.

    :param env: the environment to adjust (changed in place and returned).
    """
    from airflow_provider_seedance.testing.local_airflow import default_pycache_dir

    cache = default_pycache_dir(env)
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def worker_env(airflow_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    Return the environment of a measured worker process: an isolated ``AIRFLOW_HOME``, bytecode caching,
    no ``AIRFLOW_*`` settings of the caller, the repository on ``PYTHONPATH``.

    :param airflow_home: the home directory (created by the caller).
    :param extra: more variables.
    """
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("AIRFLOW", "_AIRFLOW"))}
    env["AIRFLOW_HOME"] = str(airflow_home)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    pycache_env(env)
    env.update(extra or {})
    return env


def rss_peak_bytes() -> int:
    """Return the peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds() -> float:
    """Return the CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_result(name: str, text: str, output: str | None) -> Path | None:
    """
    Write a results file (``benchmarks/results/<name>.md`` unless ``output`` says otherwise; ``-``: none).

    :param name: the default file stem.
    :param text: the Markdown.
    :param output: a path, ``-`` for no file, or ``None`` for the default path.
    """
    if output == "-":
        return None
    path = Path(output) if output else RESULTS_DIR / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


MiB = 1024**2
