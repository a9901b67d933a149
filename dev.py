#!/usr/bin/env python3
"""Set up the project's environment and run its two jobs: the end-to-end demo and the test suite.

Needs only Python 3.10+. The first run creates ``.venv`` (or ``$SEEDANCE_VENV``), installs ``uv`` in it
and syncs the locked dependencies (``uv.lock``); later runs reuse it and only sync what changed.

    python3 dev.py demo [--real] [...]   # run the flagship example DAG end to end (see docs/quickstart.md)
    python3 dev.py test                  # lint, type check, the whole suite on the locked Airflow, then
                                         # the matrix suite on every other supported Airflow release
    python3 dev.py test --locked         # lint, type check, the whole suite on the locked Airflow only
    python3 dev.py test --airflow 3.1.8  # one supported Airflow release only (see AIRFLOW_RELEASES)
    python3 dev.py test [pytest args]    # lint, type check, then pytest with these arguments, locked only

The matrix runs every release in ``AIRFLOW_RELEASES`` other than the locked one in its own virtualenv,
``.venv-matrix/<version>``, built once with uv from the package index as it was on that release's date
(``--exclude-newer``) and reused while its inputs are unchanged.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SEEDANCE_VENV", ROOT / ".venv"))
UV_VERSION = "0.13.9"
EXTRAS = ("dev", "amazon")
PYTEST_NO_TESTS = 5

AIRFLOW_RELEASES: dict[str, str] = {
    # Every supported Airflow minor release at its latest patch -> the package index date its test
    # environment is resolved at (``uv --exclude-newer``): about three weeks after the release's upload, so
    # its dependencies are the ones its users installed. Today's newest packages break older releases by
    # themselves (Airflow 3.2.2 with 2026-12 packages fails dag.test() with a PydanticUserError).
    "3.0.6": "2025-09-20",  # uploaded 2025-08-29
    "3.1.8": "2026-04-01",  # uploaded 2026-03-11
    "3.2.2": "2026-06-20",  # uploaded 2026-05-29
    "3.3.2": "2026-10-08",  # uploaded 2026-09-17; the locked version (uv.lock), tested in .venv
}
NEWER_THAN_RELEASE: dict[str, str] = {
    # Packages resolved at a later date than an old release's (never earlier than its own date). The
    # provider needs common-compat newer than Airflow 3.0.6's date; a user adding the provider gets it
    # upgraded. The date admits exactly the lower bound (1.12.0, uploaded 2026-01-17), so the oldest
    # release also proves that bound.
    "apache-airflow-providers-common-compat": "2026-01-18",
}
MATRIX_DIR = ROOT / ".venv-matrix"
MATRIX_JOBS = 3
"""Releases of the matrix run side by side (each in its own pytest process)."""
MATRIX_SKIPPED_DIRS = ("system", "benchmarks", "proof")
"""
Test folders that run on the locked release only: real-process, benchmark and proof suites.

The proof suites (fault matrix, chaos run, secret audit) run a few hundred task tries through ``dag.test()``
and test the provider's own rules, which do not differ by release. Airflow 3.0's ``dag.test()`` builds a new
in-process execution API for every try (seconds each), so the fault matrix alone would take over half an
hour there. What differs by release is tested on every release by the unit and ``dag.test()`` suites.
"""
MATRIX_SYSTEM_TESTS = (
    # The flagship DAG: parsed, run with dag.test(), and through a real scheduler, dag-processor and
    # triggerer (the demo's default mode, which also reads the run back through the REST API).
    "tests/system/test_flagship_dag.py",
    "tests/system/test_demo.py::test_default_demo_runs_the_flagship_dag_end_to_end",
)


def _bin(name: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return VENV / scripts / (name + (".exe" if os.name == "nt" else ""))


def _run(cmd: list[str | Path], **kwargs: object) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)  # type: ignore[arg-type]


def bootstrap() -> None:
    """Create the virtualenv if needed and sync it with the lock file."""
    if sys.version_info < (3, 10):  # noqa: UP036 - this file must explain itself on any Python
        sys.exit(f"Python 3.10 or newer is required, this is {sys.version.split()[0]}.")
    python = _bin("python")
    if not python.exists():
        print(f"Creating the virtualenv {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    uv = _bin("uv")
    pip_install = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        f"uv=={UV_VERSION}",
    ]
    needs_uv = not uv.exists() or _uv_version(uv) != UV_VERSION
    if needs_uv and subprocess.call([str(python), "-m", "pip", "--version"], stdout=subprocess.DEVNULL) != 0:
        # A virtualenv made by uv itself has no pip: give it one before installing the pinned uv.
        _run([python, "-m", "ensurepip", "--upgrade"])
    if needs_uv and _run(pip_install):
        sys.exit("Could not install uv into the virtualenv (is the package registry reachable?).")
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(VENV), VIRTUAL_ENV=str(VENV))
    env.pop("UV_SYSTEM_PYTHON", None)
    # --inexact keeps pip and uv itself, which live in the same virtualenv.
    cmd: list[str | Path] = [uv, "sync", "--frozen", "--inexact", "--quiet", "--python", python]
    for extra in EXTRAS:
        cmd += ["--extra", extra]
    if _run(cmd, env=env):
        sys.exit("Dependency sync failed; see the output above.")


def _uv_version(uv: Path) -> str:
    try:
        out = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""
    parts = out.split()
    return parts[1] if len(parts) > 1 else ""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{_bin('python').parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _pytest(python: Path, args: list[str], env: dict[str, str]) -> int:
    code = _run([python, "-m", "pytest", *args], env=env)
    if code == PYTEST_NO_TESTS:
        print("FAILED: pytest collected no tests.", flush=True)
        return 1
    return code


def locked_airflow_version() -> str:
    """Return the Airflow version pinned in ``uv.lock`` (the one ``.venv`` runs)."""
    lock = (ROOT / "uv.lock").read_text()
    match = re.search(r'^name = "apache-airflow"\nversion = "([^"]+)"', lock, flags=re.MULTILINE)
    if not match:
        sys.exit("uv.lock pins no apache-airflow version.")
    return match.group(1)


def matrix_tests() -> list[str]:
    """Return the pytest arguments run on every release besides the locked one: unit, dag.test(), flagship."""
    tests = ROOT / "tests"
    # Named one by one: pytest drops a folder argument when a file inside it is named too.
    units = [
        p.relative_to(ROOT).as_posix()
        for p in sorted(tests.iterdir())
        if (p.is_dir() and p.name not in MATRIX_SKIPPED_DIRS and any(p.glob("test_*.py")))
        or (p.is_file() and p.name.startswith("test_") and p.suffix == ".py")
    ]
    return [*units, *MATRIX_SYSTEM_TESTS]


def _matrix_python(version: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    return MATRIX_DIR / version / scripts / ("python.exe" if os.name == "nt" else "python")


def _matrix_inputs(version: str) -> str:
    """Return what a matrix virtualenv is built from; a change rebuilds it."""
    project = (ROOT / "pyproject.toml").read_bytes()
    return json.dumps(
        {
            "airflow": version,
            "date": AIRFLOW_RELEASES[version],
            "newer": NEWER_THAN_RELEASE,
            "extras": EXTRAS,
            "python": sys.version,
            "uv": UV_VERSION,
            "pyproject": hashlib.sha256(project).hexdigest(),
        },
        sort_keys=True,
    )


def build_matrix_venv(version: str) -> Path:
    """
    Create (or reuse) ``.venv-matrix/<version>``: Airflow ``version`` and the provider, resolved at its date.

    :param version: a key of :data:`AIRFLOW_RELEASES`.
    """
    target = MATRIX_DIR / version
    python = _matrix_python(version)
    stamp = target / "seedance-matrix.json"
    inputs = _matrix_inputs(version)
    if python.exists() and stamp.exists() and stamp.read_text() == inputs:
        print(f"Reusing {target} (Airflow {version}).", flush=True)
        return python
    date = AIRFLOW_RELEASES[version]
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_SYSTEM_PYTHON", "UV_EXCLUDE_NEWER"):
        env.pop(name, None)
    uv = _bin("uv")
    if _run([uv, "venv", "--quiet", "--clear", "--python", sys.executable, target], env=env):
        sys.exit(f"Could not create {target}.")
    cmd: list[str | Path] = [uv, "pip", "install", "--quiet", "--python", python]
    cmd += ["--exclude-newer", f"{date}T00:00:00Z"]
    for package, newer in NEWER_THAN_RELEASE.items():
        cmd += ["--exclude-newer-package", f"{package}={max(newer, date)}T00:00:00Z"]
    cmd += ["--editable", f".[{','.join(EXTRAS)}]", f"apache-airflow=={version}"]
    if _run(cmd, env=env):
        sys.exit(f"Could not install Airflow {version} into {target}; see the output above.")
    stamp.write_text(inputs)
    return python


def run_matrix_version(version: str, args: list[str], log: Path | None = None) -> int:
    """
    Run pytest on one Airflow release in its own virtualenv (built first if needed).

    :param version: a key of :data:`AIRFLOW_RELEASES`.
    :param args: pytest arguments; none runs :func:`matrix_tests`.
    :param log: write pytest's output to this file instead of this process's output.
    """
    python = build_matrix_venv(version)
    env = _child_env()
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    # The demo and LocalAirflow keep a bytecode cache per virtualenv: no sharing across Airflow versions.
    env.pop("PYTHONPYCACHEPREFIX", None)
    probe = [str(python), "-c", "import airflow, sys; print(airflow.__version__, sys.version.split()[0])"]
    found = subprocess.run(probe, capture_output=True, text=True, env=env, check=False).stdout.split()
    if not found or found[0] != version:
        print(f"FAILED: {python} runs Airflow {found[:1]}, not {version}.", flush=True)
        return 1
    title = f"== Airflow {version} on Python {found[1]} (packages as of {AIRFLOW_RELEASES[version]})"
    if log is None:
        print(title, flush=True)
        return _pytest(python, args or matrix_tests(), env)
    with log.open("w") as out:
        out.write(f"{title}\n")
        out.flush()
        command = [str(python), "-m", "pytest", *(args or matrix_tests())]
        code = subprocess.call(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    return 1 if code == PYTEST_NO_TESTS else code


def run_matrix(versions: list[str]) -> dict[str, tuple[int, float]]:
    """
    Run :func:`matrix_tests` on each release, :data:`MATRIX_JOBS` at a time; print each one's output whole.

    Most of a matrix run is spent waiting (on the emulator's job timelines, on Airflow's task start), so
    releases side by side share 2 cores well.

    :param versions: keys of :data:`AIRFLOW_RELEASES`.
    """
    for version in versions:  # one at a time: uv's output stays readable
        build_matrix_venv(version)
    results: dict[str, tuple[int, float]] = {}

    def one(version: str) -> tuple[int, float]:
        started = time.monotonic()
        code = run_matrix_version(version, [], log=MATRIX_DIR / f"{version}.log")
        return code, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=MATRIX_JOBS) as pool:
        futures = {pool.submit(one, version): version for version in versions}
        print(f"Running the matrix on {', '.join(versions)} ({MATRIX_JOBS} at a time)...", flush=True)
        for future in concurrent.futures.as_completed(futures):
            version = futures[future]
            results[version] = future.result()
            print((MATRIX_DIR / f"{version}.log").read_text(errors="replace"), flush=True)
    return results


def run_tests(args: list[str]) -> int:
    """
    Run ruff (lint + format check), mypy, then pytest on every supported Airflow; no test is a failure.

    Without arguments: the whole suite on the locked Airflow, then :func:`matrix_tests` on every other
    release of :data:`AIRFLOW_RELEASES` (what CI runs). ``--locked``: the locked Airflow only.
    ``--airflow X.Y.Z`` runs one release only (the whole suite when it is the locked one, else
    :func:`matrix_tests`). Other arguments go to pytest instead of the defaults, on that one release (the
    locked one without ``--airflow``).

    :param args: the command line after ``test``.
    """
    only = None
    if args[:1] == ["--locked"]:
        only, args = locked_airflow_version(), args[1:]
    elif args[:1] == ["--airflow"] or (args and args[0].startswith("--airflow=")):
        only = args[1] if args[0] == "--airflow" and len(args) > 1 else args[0].partition("=")[2]
        args = args[2:] if args[0] == "--airflow" else args[1:]
        if only not in AIRFLOW_RELEASES:
            print(f"Unsupported Airflow {only!r}; supported: {', '.join(AIRFLOW_RELEASES)}.", flush=True)
            return 2
    env = _child_env()
    checks: list[list[str | Path]] = [
        [_bin("ruff"), "check", "."],
        [_bin("ruff"), "format", "--check", "."],
        [_bin("mypy")],
    ]
    for check in checks:
        if code := _run(check, env=env):
            print(f"FAILED: {' '.join(map(str, check[:2]))} exited {code}", flush=True)
            return code
    locked = locked_airflow_version()
    if only is not None and only != locked:
        return run_matrix_version(only, args)
    results: dict[str, tuple[int, float]] = {}
    began = started = time.monotonic()
    results[locked] = (_pytest(_bin("python"), args, env), time.monotonic() - started)
    if only is None and not args:
        results.update(run_matrix([version for version in AIRFLOW_RELEASES if version != locked]))
    if len(results) > 1:
        print("\nAirflow matrix:", flush=True)
        for version in (v for v in AIRFLOW_RELEASES if v in results):
            code, seconds = results[version]
            what = "whole suite (uv.lock)" if version == locked else "unit, dag.test(), flagship system"
            print(
                f"  {version:8} {'passed' if code == 0 else 'FAILED':7} {seconds:6.0f} s  {what}", flush=True
            )
        print(f"  total {(time.monotonic() - began) / 60:.1f} min", flush=True)
    return next((code for code, _ in results.values() if code), 0)


def run_demo(args: list[str]) -> int:
    """Run the end-to-end demo (scripts/demo.py) inside the virtualenv."""
    env = _child_env()
    if env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX"):
        # Without bytecode, the demo and each Airflow process it starts compile Airflow from source:
        # seconds of CPU apiece. Cache it inside the virtualenv instead (where the demo's LocalAirflow
        # would put it too), keeping the source tree free of __pycache__ folders.
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = str(VENV / ".cache" / "seedance-local-airflow" / "pycache")
    return _run([_bin("python"), ROOT / "scripts" / "demo.py", *args], env=env)


def main(argv: list[str]) -> int:
    """Dispatch ``demo`` or ``test``."""
    commands = {"demo": run_demo, "test": run_tests}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    bootstrap()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
