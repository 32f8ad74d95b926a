"""`make test` runs one second of the benchmark: it must run end to end. Nothing is timed."""

import os
import subprocess
import sys

import pytest

from tests.support import ROOT, subprocess_env

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_end_to_end(tmp_path):
    run_id = os.environ.get("TEST_RUN_ID", "").lower().replace("-", "_")
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT,
        env=subprocess_env(BENCH_DATABASE=f"stockroom_bench_smoke{run_id}", BENCH_REDIS_DB="10"),
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    table = next(tmp_path.glob("*-smoke.md")).read_text()
    assert "| ceiling_full |" in table
    assert "| catalogue_cached |" in table
    assert "req/s of each run: ceiling_full " in table
