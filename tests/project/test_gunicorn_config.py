"""gunicorn.conf.py: no control socket shared by every gunicorn on the host (issue 18, finding 12),
and a worker that boots under a configuration a security check refuses stops the server."""

import runpy
import subprocess
import sys

import pytest
from gunicorn.config import Config

from tests.support import ROOT, free_port, gunicorn_server, subprocess_env

CONFIG = str(ROOT / "gunicorn.conf.py")


def gunicorn_settings(monkeypatch, tmp_path, **env) -> dict:
    """The settings gunicorn.conf.py gives gunicorn with this environment. The config sets
    PROMETHEUS_MULTIPROC_DIR when it is missing; set here, it is undone after the test, so the
    test process never believes itself a multiprocess gunicorn."""
    monkeypatch.delenv("GUNICORN_CONTROL_SOCKET", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = runpy.run_path(CONFIG)
    known = Config().settings
    return {name: value for name, value in module.items() if name in known}


def test_the_control_socket_is_off_unless_a_path_is_given(monkeypatch, tmp_path):
    assert gunicorn_settings(monkeypatch, tmp_path)["control_socket_disable"] is True

    path = str(tmp_path / "web.ctl")
    chosen = gunicorn_settings(monkeypatch, tmp_path, GUNICORN_CONTROL_SOCKET=path)
    assert chosen["control_socket_disable"] is False
    assert chosen["control_socket"] == path


@pytest.mark.slow
def test_a_running_gunicorn_leaves_no_socket_in_the_shared_place(tmp_path):
    shared = tmp_path / "runtime"
    shared.mkdir()

    with gunicorn_server(tmp_path, WEB_CONCURRENCY="1", XDG_RUNTIME_DIR=str(shared), HOME=str(tmp_path)):
        assert list(shared.iterdir()) == []
        assert not (tmp_path / ".gunicorn").exists()


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
