"""Keep benchmarks/bench_transfer.py working: its helpers, and a tiny real run of every worker path."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_transfer.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_transfer", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1GiB", 1024**3),
        ("256MiB", 256 * 1024**2),
        ("64MB", 64 * 1000**2),
        ("1048576", 1048576),
        ("2G", 2 * 1024**3),
    ],
)
def test_parse_size(bench: ModuleType, text: str, size: int) -> None:
    assert bench.parse_size(text) == size


def test_targets_are_evaluated(bench: ModuleType) -> None:
    mib = 1024**2
    rows = [
        bench.Row("seedance", seconds=9.0, baseline=100 * mib, peak=140 * mib, size=1000 * mib),
        bench.Row("seedance_sha256", seconds=20.0, baseline=100 * mib, peak=300 * mib, size=1000 * mib),
        bench.Row("http_to_s3", seconds=10.0, baseline=100 * mib, peak=2100 * mib, size=1000 * mib),
        bench.Row("reference", seconds=9.0, baseline=60 * mib, peak=160 * mib, size=1000 * mib),
        bench.Row("seedance", seconds=10.0, baseline=0, peak=0, size=1000 * mib, limited=True),
        bench.Row("reference", seconds=40.0, baseline=0, peak=0, size=1000 * mib, limited=True),
    ]
    verdicts, ok = bench.evaluate(rows)
    # Only the default's figures are targets: the sha256_metadata row is slower and bigger, for comparison.
    assert ok, verdicts
    assert any("memory" in v and "met" in v for v in verdicts)
    assert any("1.00x the reference's (target <= 1.0x): met" in v for v in verdicts)
    assert any("rate-limited" in v and "0.25x" in v and "met" in v for v in verdicts)
    rows[0] = bench.Row("seedance", seconds=20.0, baseline=100 * mib, peak=200 * mib, size=1000 * mib)
    rows[4] = bench.Row("seedance", seconds=30.0, baseline=0, peak=0, size=1000 * mib, limited=True)
    verdicts, ok = bench.evaluate(rows)
    assert not ok
    assert sum("MISSED" in v for v in verdicts) == 3
    table = bench.render(rows, verdicts, 25_000_000)
    assert table.count("\n|") == 4 + 2 + 2 * 2
    assert "limited to 25 MB/s per connection" in table


def test_tiny_run_of_every_worker(tmp_path: Path) -> None:
    output = tmp_path / "transfer.md"
    done = subprocess.run(
        # Every sha256/staging mode shares one worker path: these methods cover every branch of the script.
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--size",
            "12MiB",
            "--methods",
            "seedance,seedance_sha256,http_to_s3,reference",
            "--limited-methods",
            "seedance,reference",
            "--rate-limit",
            "50000000",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = output.read_text()
    for label in ("one pass, parallel ranges", "sha256_metadata=True", "HttpToS3Operator", "upload_fileobj"):
        assert label in report
    assert "limited to 50 MB/s per connection" in report
    assert "## Environment" in report
