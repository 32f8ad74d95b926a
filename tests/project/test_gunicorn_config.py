"""gunicorn.conf.py: a worker that boots under a configuration a security check refuses stops the server."""

import subprocess
import sys

import pytest

from tests.support import ROOT, free_port, subprocess_env


@pytest.mark.slow
def test_gunicorn_refuses_to_start_when_metrics_have_no_way_in(tmp_path):
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="project.settings.test",
        GUNICORN_BIND=f"127.0.0.1:{free_port()}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        WEB_CONCURRENCY="1",
        METRICS_TOKEN="",
        METRICS_ALLOW_LOOPBACK="0",
    )

    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 3, result.stderr[-2000:]  # gunicorn's "worker failed to boot"
    assert "stockroom.E001" in result.stderr
