#!/usr/bin/env python3
"""Set up the project's environment and run its two jobs: the end-to-end demo and the test suite.

Needs only Python 3.10+. The first run creates ``.venv`` (or ``$SEEDANCE_VENV``), installs ``uv`` in it
and syncs the locked dependencies (``uv.lock``); later runs reuse it and only sync what changed.

    python3 dev.py demo [--real] [...]   # run the flagship example DAG end to end (see docs/quickstart.md)
    python3 dev.py test [pytest args]    # lint, format check, type check, then the whole pytest suite
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SEEDANCE_VENV", ROOT / ".venv"))
UV_VERSION = "0.13.9"
EXTRAS = ("dev", "amazon")
PYTEST_NO_TESTS = 5


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


def run_tests(args: list[str]) -> int:
    """Run ruff (lint + format check), mypy, then pytest; pytest finding no test is a failure."""
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
    code = _run([_bin("python"), "-m", "pytest", *args], env=env)
    if code == PYTEST_NO_TESTS:
        print("FAILED: pytest collected no tests.", flush=True)
        return 1
    return code


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
