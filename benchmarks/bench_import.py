#!/usr/bin/env python3
"""Benchmark: what importing the provider costs on top of ``import airflow.sdk``.

Every sample is a fresh Python process that imports, timing each step with ``time.perf_counter``:

1. ``import airflow.sdk`` (the baseline every DAG file and task pays anyway);
2. the Airflow base classes any provider uses (``BaseHook``, ``BaseOperator``, ``BaseSensorOperator`` from
   ``airflow.sdk`` and ``airflow.triggers.base``), so Airflow's own lazy imports are not billed to us;
3. one provider module (or all of them).

The provider's increment is step 2 + 3 (over ``import airflow.sdk``, the target: at most 100 ms) and step 3
alone (over the base classes). Configurations are run round-robin, ``--repeat`` times each, so background
load spreads evenly; the table shows median and p90. Each process also lists which heavy modules (boto3,
botocore, FastAPI, Starlette, uvicorn, Pillow, moto, the Amazon provider's AWS hooks) appeared in
``sys.modules`` after step 3 but not before: hooks, operators, triggers and sensors must import none of them.
Finally one ``python -X importtime`` run lists the slowest imports the provider triggers.

Bytecode is cached (``PYTHONPYCACHEPREFIX``, see ``_common.pycache_env``) and one warm-up process runs
first, so the figures are those of an installed package, not of compiling source.

    python benchmarks/bench_import.py                 # 15 rounds, writes benchmarks/results/import.md
    python benchmarks/bench_import.py --repeat 5 --output -
    python benchmarks/bench_import.py --quick         # 1 round of two configurations, prints only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    finish_notes,
    fmt,
    machine_notes,
    markdown_table,
    median,
    notes_block,
    percentile,
    verdict,
    worker_env,
    write_result,
)

PACKAGE = "airflow_provider_seedance"
MODULES: dict[str, str] = {
    "hooks": f"{PACKAGE}.hooks.seedance",
    "operators": f"{PACKAGE}.operators.seedance",
    "triggers": f"{PACKAGE}.triggers.seedance",
    "sensors": f"{PACKAGE}.sensors.seedance",
    "transfers.seedance_to_s3": f"{PACKAGE}.transfers.seedance_to_s3",
    "testing": f"{PACKAGE}.testing",
}
"""The configurations measured: a label and the module imported in step 3."""

ALL = "all of the above"
MUST_STAY_LIGHT = ("hooks", "operators", "triggers", "sensors")
"""Modules a worker or triggerer imports for every Seedance task: no heavy dependency allowed."""

HEAVY = (
    "boto3",
    "botocore",
    "fastapi",
    "starlette",
    "uvicorn",
    "PIL",
    "moto",
    "airflow.providers.amazon.aws.hooks",
)
"""Top-level modules that must not be imported by the light modules."""

TARGET_MS = 100.0
DEFAULT_REPEAT = 15
WORKER_TIMEOUT_SECONDS = 300.0
TOP_OFFENDERS = 12

WORKER_CODE = """
import json, sys, time
HEAVY = {heavy!r}
def heavy(mods):
    return sorted(h for h in HEAVY if h in mods)
def now():
    return time.perf_counter(), time.process_time()
w0, c0 = now()
import airflow.sdk
w1, c1 = now()
from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
import airflow.triggers.base
w2, c2 = now()
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
w3, c3 = now()
new = set(sys.modules) - before
print(json.dumps({{
    "wall": [w1 - w0, w2 - w1, w3 - w2], "cpu": [c1 - c0, c2 - c1, c3 - c2],
    "new_modules": len(new),
    "heavy_before": heavy(before), "heavy_new": heavy(new),
    "third_party_new": sorted({{m.split(".")[0] for m in new if not m.startswith(("airflow", {package!r}))}}),
}}))
"""


@dataclass
class Samples:
    """The measurements of one configuration: per process, seconds of (sdk, base classes, provider) steps."""

    label: str
    modules: list[str]
    wall: list[list[float]] = field(default_factory=list)
    cpu: list[list[float]] = field(default_factory=list)
    new_modules: int = 0
    heavy_new: set[str] = field(default_factory=set)
    heavy_before: set[str] = field(default_factory=set)
    third_party_new: set[str] = field(default_factory=set)

    def sdk_ms(self, kind: str) -> list[float]:
        """
        Per-process milliseconds of ``import airflow.sdk``.

        :param kind: ``wall`` or ``cpu``.
        """
        return [steps[0] * 1000 for steps in getattr(self, kind)]

    def over_sdk_ms(self, kind: str) -> list[float]:
        """
        Per-process milliseconds of steps 2 + 3 (the increment over ``import airflow.sdk``).

        :param kind: ``wall`` or ``cpu``.
        """
        return [(steps[1] + steps[2]) * 1000 for steps in getattr(self, kind)]

    def over_bases_ms(self, kind: str) -> list[float]:
        """
        Per-process milliseconds of step 3 alone.

        :param kind: ``wall`` or ``cpu``.
        """
        return [steps[2] * 1000 for steps in getattr(self, kind)]


def run_worker(
    command: list[str], env: dict[str, str], cwd: Path, what: str
) -> subprocess.CompletedProcess[str]:
    """
    Run one fresh interpreter; return its finished process, or exit naming ``what`` failed with its stderr.

    :param command: the interpreter and its arguments.
    :param env: the worker environment.
    :param cwd: the working directory.
    :param what: what the command does, for the failure message.
    """
    proc = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_SECONDS, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return proc


def run_sample(samples: Samples, env: dict[str, str], cwd: Path) -> None:
    """
    Import ``samples.modules`` in one fresh process and add its timings.

    :param samples: the configuration (updated in place).
    :param env: the worker environment.
    :param cwd: the working directory (a temp dir, so the repository's files are not on ``sys.path`` by
        accident).
    """
    code = WORKER_CODE.format(heavy=HEAVY, modules=samples.modules, package=PACKAGE)
    proc = run_worker([PYTHON, "-c", code], env, cwd, f"importing {samples.modules}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    samples.wall.append(data["wall"])
    samples.cpu.append(data["cpu"])
    samples.new_modules = data["new_modules"]
    samples.heavy_new.update(data["heavy_new"])
    samples.heavy_before.update(data["heavy_before"])
    samples.third_party_new.update(data["third_party_new"])


@dataclass(frozen=True)
class ImportTime:
    """One line of ``python -X importtime``."""

    name: str
    depth: int
    self_us: int
    cumulative_us: int


def importtime_offenders(env: dict[str, str], cwd: Path) -> tuple[list[ImportTime], list[ImportTime]]:
    """
    Run ``python -X importtime`` over every provider module after ``airflow.sdk`` and its base classes.

    Returns (the imports the provider triggers, slowest cumulative first; the provider's own modules).

    :param env: the worker environment.
    :param cwd: the working directory.
    """
    marker = "--seedance-bench-marker--"
    code = (
        "import sys\n"
        "import airflow.sdk\n"
        "from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator\n"
        "import airflow.triggers.base\n"
        f"sys.stderr.write({marker!r} + '\\n'); sys.stderr.flush()\n"
        f"for name in {list(MODULES.values())!r}:\n"
        "    __import__(name)\n"
    )
    proc = run_worker([PYTHON, "-X", "importtime", "-c", code], env, cwd, "python -X importtime")
    lines = proc.stderr.split(marker, 1)[-1].splitlines()
    entries = []
    for line in lines:
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_part, cumulative_part, name_part = line.split(":", 1)[1].split("|")
        raw = name_part.rstrip()
        stripped = raw.lstrip()
        depth = (len(raw) - len(stripped) - 1) // 2
        entries.append(ImportTime(stripped, depth, int(self_part), int(cumulative_part)))
    offenders = sorted(entries, key=lambda e: e.cumulative_us, reverse=True)
    ours = [e for e in offenders if e.name.startswith(PACKAGE)]
    return offenders, ours


def render(
    results: list[Samples],
    offenders: list[ImportTime],
    ours: list[ImportTime],
    repeat: int,
    quick: bool,
    notes: dict[str, str],
) -> tuple[str, list[str]]:
    """
    Build the Markdown report and the verdict lines.

    :param results: one entry per configuration.
    :param offenders: ``-X importtime`` entries after the base classes, slowest first.
    :param ours: the provider's own entries.
    :param repeat: samples per configuration.
    :param quick: whether this was a quick run.
    :param notes: the environment notes taken at the start.
    """
    sdk_cpu = [v for r in results for v in r.sdk_ms("cpu")]
    sdk_wall = [v for r in results for v in r.sdk_ms("wall")]
    rows = [
        [
            "`import airflow.sdk` (baseline, every process)",
            fmt(median(sdk_cpu), 0),
            fmt(percentile(sdk_cpu, 90), 0),
            "",
            fmt(median(sdk_wall), 0),
            fmt(percentile(sdk_wall, 90), 0),
            "",
        ]
    ]
    verdicts: list[str] = []
    for r in results:
        cpu, wall = r.over_sdk_ms("cpu"), r.over_sdk_ms("wall")
        rows.append(
            [
                f"+ `{r.label}`" if r.label != ALL else f"+ {ALL}",
                fmt(median(cpu), 1),
                fmt(percentile(cpu, 90), 1),
                fmt(median(r.over_bases_ms("cpu")), 1),
                fmt(median(wall), 1),
                fmt(percentile(wall, 90), 1),
                ", ".join(sorted(r.heavy_new)) or "none",
            ]
        )
        verdicts.append(
            f"- `{r.label}`: increment over `import airflow.sdk` median {fmt(median(cpu), 1)} ms CPU, "
            f"{fmt(median(wall), 1)} ms wall (target <= {TARGET_MS:.0f} ms): "
            f"CPU {verdict(median(cpu) <= TARGET_MS)}, wall {verdict(median(wall) <= TARGET_MS)}"
        )
        if r.label in MUST_STAY_LIGHT:
            verdicts.append(
                f"- `{r.label}` imports no boto3/botocore/FastAPI/Starlette/uvicorn/Pillow/moto/Amazon "
                f"AWS hooks: {verdict(not r.heavy_new)}"
                + (f" (found: {', '.join(sorted(r.heavy_new))})" if r.heavy_new else "")
            )
    table = markdown_table(
        [
            "import",
            "CPU median ms",
            "CPU p90 ms",
            "CPU median ms, provider step only",
            "wall median ms",
            "wall p90 ms",
            "heavy modules newly imported",
        ],
        rows,
    )
    already = sorted(set().union(*(r.heavy_before for r in results)))
    third = {r.label: sorted(r.third_party_new) for r in results}
    offender_rows = [
        [f"`{'  ' * e.depth}{e.name}`", e.depth, fmt(e.self_us / 1000, 1), fmt(e.cumulative_us / 1000, 1)]
        for e in offenders[:TOP_OFFENDERS]
    ]
    our_rows = [
        [f"`{e.name}`", fmt(e.self_us / 1000, 1), fmt(e.cumulative_us / 1000, 1)]
        for e in sorted(ours, key=lambda e: e.self_us, reverse=True)[:TOP_OFFENDERS]
    ]
    parts = [
        "# Import cost",
        "",
        f"`python benchmarks/bench_import.py{' --quick' if quick else ''}`: {repeat} fresh process(es) per "
        "row, run round-robin. Milliseconds of CPU (`time.process_time`) and of wall clock "
        "(`time.perf_counter`) inside each process. A `+` row is the increment over `import airflow.sdk`: "
        "Airflow's base classes (`BaseHook`, `BaseOperator`, `BaseSensorOperator`, `airflow.triggers.base`) "
        "plus the module; 'provider step only' leaves the base classes out. Imports of cached bytecode are "
        "CPU-bound, so on an idle machine wall ~= CPU; on a loaded one the wall figures include waiting for "
        "a core (see the load average below), which is why the verdicts are given for both.",
        "",
        table,
        "",
        "## Verdicts",
        "",
        *verdicts,
        "",
        f"Heavy modules already imported by `airflow.sdk` itself: {', '.join(already) or 'none'}.",
        "",
        "Third-party top-level packages each configuration adds to `sys.modules` (after the base classes):",
        "",
        *[f"- `{label}`: {', '.join(mods) or 'none'}" for label, mods in third.items()],
        "",
        *(
            importtime_section(offender_rows, our_rows)
            if offenders
            else ["(`-X importtime` is skipped in --quick mode.)", ""]
        ),
        "## Environment",
        "",
        notes_block(finish_notes(notes)),
        "",
    ]
    return "\n".join(parts), verdicts


def importtime_section(offender_rows: list[list[Any]], our_rows: list[list[Any]]) -> list[str]:
    """
    Render the ``-X importtime`` section.

    :param offender_rows: the slowest imports after the base classes.
    :param our_rows: the provider's own modules.
    """
    return [
        "## `python -X importtime`: the slowest imports the provider triggers",
        "",
        "After `airflow.sdk` and the base classes, all provider modules above imported in one process "
        "(a module shared by several is billed to the first).",
        "",
        markdown_table(["module (indented by nesting)", "depth", "self ms", "cumulative ms"], offender_rows),
        "",
        "The provider's own modules, by self time:",
        "",
        markdown_table(["module", "self ms", "cumulative ms"], our_rows),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="processes per configuration")
    parser.add_argument(
        "--quick", action="store_true", help="one round of the hook and all modules, no file written"
    )
    parser.add_argument(
        "--output", default=None, help="results file (default benchmarks/results/import.md; '-': none)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    configs = {**MODULES, ALL: ""}
    if args.quick:
        configs = {"hooks": MODULES["hooks"], ALL: ""}
        args.repeat = 1
        args.output = args.output or "-"
    results = [
        Samples(label, [module] if module else list(MODULES.values())) for label, module in configs.items()
    ]
    notes = machine_notes()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="seedance-bench-import-") as tmp:
        home = Path(tmp) / "airflow-home"
        home.mkdir()
        env = worker_env(home)
        # Warm-up: fills the bytecode cache and lets Airflow write its default config once.
        run_sample(Samples("warm-up", list(MODULES.values())), env, Path(tmp))
        for round_no in range(args.repeat):
            for samples in results:
                run_sample(samples, env, Path(tmp))
            print(f"round {round_no + 1}/{args.repeat} done ({time.monotonic() - started:.0f} s)", flush=True)
        offenders, ours = importtime_offenders(env, Path(tmp)) if not args.quick else ([], [])
    report, _ = render(results, offenders, ours, args.repeat, args.quick, notes)
    print(report)
    path = write_result("import", report, args.output)
    if path is not None:
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
