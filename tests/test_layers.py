"""The package's layers point down only: a lower layer never imports a higher one.

The trigger module is the triggerer's first import of this package: were it to reach ``operators/``, an
``operators/__init__.py`` that re-exports the operators would import the trigger module half-initialised.
These tests read every module's imports (runtime, lazy and type-only alike) so an upward import fails here
rather than in a triggerer.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "airflow_provider_seedance"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[frozenset[str], ...] = (
    # Data, rules and metadata every layer uses.
    frozenset(
        {"__init__", "_state_log", "exceptions", "models", "catalog", "cost", "get_provider_info"}
        | {"version_compat"}
    ),
    # HTTP: the API hook, and the guarded downloads of media that reuse its retry module.
    frozenset({"hooks", "downloads", "image_checks"}),
    # What the trigger, the sensor and the operators share: the request lifecycle and the extra link.
    frozenset({"lifecycle", "links"}),
    frozenset({"triggers"}),
    # The sensor defers to the trigger.
    frozenset({"sensors"}),
    frozenset({"operators"}),
    frozenset({"transfers"}),
    # The emulator and the local Airflow used in tests and the demo: above everything it exercises.
    frozenset({"testing"}),
)
"""Each set holds top-level modules or subpackages of the package, lowest layer first; a module may import
its own layer and the ones below."""


def component(module: str) -> str:
    """Return the top-level module or subpackage of a dotted module name inside the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(name: str) -> int:
    for level, members in enumerate(LAYERS):
        if name in members:
            return level
    raise AssertionError(f"{PACKAGE}.{name} is in no layer: add it to LAYERS in {__file__}")


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """Return ``(line, module)`` for every import of this package in a file, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when `sub` is one, else a name of `pkg`.
            found += [(node.lineno, existing_module(f"{base}.{alias.name}", root)) for alias in node.names]
    ours = {(line, mod) for line, mod in found if mod == root.name or mod.startswith(f"{root.name}.")}
    return sorted(ours)


def existing_module(dotted: str, root: Path) -> str:
    """Return the longest prefix of ``dotted`` that is a module or package of the tree at ``root``."""
    parts = dotted.split(".")
    while len(parts) > 1:
        path = root.parent.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def upward_imports(root: Path) -> list[str]:
    """Return one line per import that points from a lower layer to a higher one."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        own = component(importer)
        for line, target in imported_modules(path, root):
            other = component(target)
            if rank(other) <= rank(own):
                continue
            where = path.relative_to(root.parent)
            problems.append(
                f"{where}:{line} ({own}, layer {rank(own)}) imports {target} (layer {rank(other)})"
            )
    return problems


def test_every_module_of_the_package_has_a_layer() -> None:
    names = {component(module_name(path, ROOT)) for path in ROOT.rglob("*.py")}
    for name in sorted(names):
        rank(name)


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports(ROOT) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # A check that cannot fail proves nothing: a lazy import of the operators from the trigger is found.
    copy = tmp_path / PACKAGE
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    trigger = copy / "triggers" / "seedance.py"
    trigger.write_text(
        trigger.read_text(encoding="utf-8")
        + "\n\ndef _late() -> None:\n    from ..operators import seedance  # noqa: F401\n",
        encoding="utf-8",
    )
    [problem] = upward_imports(copy)
    assert problem.startswith(f"{PACKAGE}/triggers/seedance.py:")
    assert "imports airflow_provider_seedance.operators.seedance" in problem


def test_operators_package_may_re_export_its_operators(tmp_path: Path) -> None:
    # The triggerer imports the trigger module first; with operators/__init__.py re-exporting the
    # operators, that import must not meet a half-initialised module.
    shutil.copytree(ROOT, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / PACKAGE / "operators" / "__init__.py").write_text(
        f"from __future__ import annotations\n\nfrom {PACKAGE}.operators.seedance import *  # noqa: F403\n",
        encoding="utf-8",
    )
    code = (
        f"import {PACKAGE}.triggers.seedance, {PACKAGE}.operators as ops\n"
        f"assert ops.__file__.startswith({str(tmp_path)!r}), ops.__file__\n"
        "print(ops.SeedanceImageToVideoOperator.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "SeedanceImageToVideoOperator"
