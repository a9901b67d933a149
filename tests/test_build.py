"""``python -m build`` makes a wheel and an sdist with the package, its data files, entry points and metadata.

The build runs once per module. With ``hatchling`` installed in the environment it builds
``--no-isolation``: offline, about 10 s. Otherwise ``build`` creates isolated environments and installs
hatchling from the package index (about 45 s), and the tests are skipped when that cannot be done (no
network).
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_seedance import __version__

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "airflow_provider_seedance"
DIST_NAME = "airflow-provider-seedance"
WHEEL_STEM = f"airflow_provider_seedance-{__version__}"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel and the sdist into a temporary directory; return that directory."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (it is in the dev extra)")
    out = tmp_path_factory.mktemp("dist")
    isolated = importlib.util.find_spec("hatchling") is None
    command = [sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(out)]
    if not isolated:
        command.append("--no-isolation")
    command.append(str(ROOT))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if isolated and "Installed build dependency versions" not in output:
            pytest.skip(
                "hatchling is not installed and the isolated build environment could not be created "
                f"(no package index?): {output.strip().splitlines()[-1:]}"
            )
        pytest.fail(f"python -m build failed ({proc.returncode}):\n{output[-4000:]}")
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("*.whl")
    assert path.name == f"{WHEEL_STEM}-py3-none-any.whl"
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def sdist(dist: Path) -> tarfile.TarFile:
    (path,) = dist.glob("*.tar.gz")
    assert path.name == f"{WHEEL_STEM}.tar.gz"
    return tarfile.open(path)


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    return email.parser.Parser().parsestr(wheel.read(f"{WHEEL_STEM}.dist-info/METADATA").decode())


def test_version_is_defined_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project
    assert not re.search(r"(?m)^version\s*=", project)
    assert 'path = "airflow_provider_seedance/__init__.py"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", __version__)


def _dev_script() -> Any:
    spec = importlib.util.spec_from_file_location("seedance_dev_script", ROOT / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == DIST_NAME
    assert meta["Version"] == __version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert ">=3.10" in meta["Requires-Python"]
    assert {"amazon", "images", "dev"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    # The Airflow lower bound is the oldest release the test matrix (dev.py) runs.
    oldest = min(_dev_script().AIRFLOW_RELEASES, key=lambda v: tuple(map(int, v.split("."))))
    core = (f"apache-airflow>={oldest}", "apache-airflow-providers-common-compat>=")
    for dependency in (*core, "httpx", "pydantic", "tenacity"):
        assert any(r.startswith(dependency) and "extra ==" not in r for r in requires), dependency
    assert any(r.startswith("apache-airflow-providers-amazon") and "extra == 'amazon'" in r for r in requires)
    assert any(r.startswith("pillow") and "extra == 'images'" in r for r in requires)
    assert (
        "Generate videos with ByteDance **Seedance**" in meta.get_payload()
    )  # the README is the description
    assert f"{WHEEL_STEM}.dist-info/licenses/LICENSE" in wheel.namelist()


def test_wheel_entry_points(wheel: zipfile.ZipFile) -> None:
    text = wheel.read(f"{WHEEL_STEM}.dist-info/entry_points.txt").decode()
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        elif "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            sections[current][name] = value
    assert sections["apache_airflow_provider"] == {
        "provider_info": "airflow_provider_seedance.get_provider_info:get_provider_info"
    }
    assert sections["console_scripts"]["seedance-emulator"] == "airflow_provider_seedance.testing.cli:main"


def test_wheel_holds_the_package_and_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
        and subprocess.run(
            ["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True, check=False
        ).returncode
        == 0
    }
    assert sources, "no tracked sources found"
    assert not sources - names, f"missing from the wheel: {sorted(sources - names)}"
    assert "airflow_provider_seedance/py.typed" in names
    sample = "airflow_provider_seedance/testing/assets/sample.mp4"
    assert wheel.read(sample) == (ROOT / sample).read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "docs/", "example_dags/", "benchmarks/"))]
    init = wheel.read("airflow_provider_seedance/__init__.py").decode()
    assert f'__version__ = "{__version__}"' in init


def test_sdist_holds_sources_docs_and_license(sdist: tarfile.TarFile) -> None:
    prefix = f"{WHEEL_STEM}/"
    names = {name.removeprefix(prefix) for name in sdist.getnames()}
    for required in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "PKG-INFO",
        "docs/index.md",
        "airflow_provider_seedance/__init__.py",
        "airflow_provider_seedance/py.typed",
        "airflow_provider_seedance/testing/assets/sample.mp4",
        "example_dags/example_seedance_to_s3.py",
    ):
        assert required in names, required
    assert not [n for n in names if n.startswith((".venv/", ".git/", ".demo/")) or "__pycache__" in n]
    member = sdist.extractfile(f"{prefix}PKG-INFO")
    assert member is not None
    pkg_info = email.parser.Parser().parsestr(member.read().decode())
    assert (pkg_info["Name"], pkg_info["Version"]) == (DIST_NAME, __version__)
