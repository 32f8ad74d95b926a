"""`make two-nodes` (bin/two-nodes, ops/two-nodes.Procfile, ops/haproxy/stockroom.cfg) without
starting it: what must differ between two instances on one host does, and HAProxy takes the file."""

import os
import re
import subprocess

import pytest

from tests.support import ROOT

PROCFILE = ROOT / "ops" / "two-nodes.Procfile"


def _processes() -> dict[str, str]:
    lines = [line for line in PROCFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split(": ", 1) for line in lines)


def _assignments(command: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", command))


def test_each_web_node_has_its_own_port_control_socket_and_metrics_folder():
    """A shared metrics folder would be emptied by the other node's start (gunicorn.conf.py's
    on_starting); a shared control socket is taken over by the last gunicorn to start."""
    webs = [_assignments(command) for name, command in _processes().items() if re.fullmatch(r"web\d", name)]
    assert len(webs) == 2
    for setting in ("PORT", "GUNICORN_CONTROL_SOCKET", "PROMETHEUS_MULTIPROC_DIR"):
        assert len({web[setting] for web in webs}) == 2, setting


def test_each_celery_worker_has_its_own_name_and_metrics_port_and_beat_runs_once():
    processes = _processes()
    workers = [_assignments(command) for name, command in processes.items() if re.fullmatch(r"worker\d", name)]
    assert len(workers) == 2
    # bin/worker names the node after CELERY_WORKER_NAME, and its metrics folder after the port.
    assert len({worker["CELERY_WORKER_NAME"] for worker in workers}) == 2
    assert len({worker["WORKER_METRICS_PORT"] for worker in workers}) == 2
    assert '--hostname "${CELERY_WORKER_NAME:-worker}@%h"' in (ROOT / "bin" / "worker").read_text()
    assert [name for name, command in processes.items() if "bin/beat" in command] == ["beat"]


@pytest.mark.parametrize("nodes", [1, 2])
def test_haproxy_accepts_the_configuration_for_one_node_and_for_two(nodes):
    env = {**os.environ, "STOCKROOM_LISTEN": "127.0.0.1:1", "STOCKROOM_NODE1": "127.0.0.1:2"}
    env.pop("STOCKROOM_NODE2", None)
    if nodes == 2:
        env["STOCKROOM_NODE2"] = "127.0.0.1:3"
    checked = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(ROOT / "ops" / "haproxy" / "stockroom.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
