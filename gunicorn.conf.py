"""gunicorn for Stockroom: workers and class from the environment, Prometheus multiprocess mode."""

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Every worker writes its metrics here; /metrics sums them (set before any worker imports the client).
MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(ROOT / "var" / "prometheus-web"))

wsgi_app = "project.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
# Two per core on the 2-core machine.
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Each worker listens on its own socket (SO_REUSEPORT) and the kernel spreads new connections over
# them. On one shared socket a burst of keep-alive connections (wrk's 16) often all landed on one
# worker, whose accept loop won every race: it held one core's worth of GIL while the other core
# idled, at 40% of the throughput. Linux balances; on macOS one socket takes all (set it to 0 there).
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") == "1"
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
# A proxy on the same host sets these; gunicorn trusts them only from these addresses.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# gunicorn's control socket (gunicornc) defaults to one path per user ($XDG_RUNTIME_DIR or
# ~/.gunicorn/gunicorn.ctl), shared by every gunicorn that user runs on the host: each start takes it
# over from the last. Off unless GUNICORN_CONTROL_SOCKET names this instance's own path.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket


def on_starting(server):
    """Start with an empty metrics folder: files of dead earlier workers would be summed forever."""
    shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)
    os.makedirs(MULTIPROC_DIR, exist_ok=True)


def post_worker_init(worker):
    """Refuse to serve under a configuration that a security check calls an error (e.g. /metrics
    with neither a token nor loopback allowed): manage.py runs the checks, gunicorn does not. The
    exception makes this a boot failure, which stops the whole server (exit code 3)."""
    from django.core.checks import ERROR, Tags, run_checks

    errors = [message for message in run_checks(tags=[Tags.security]) if message.level >= ERROR]
    if errors:
        raise RuntimeError("refusing to start: " + "; ".join(str(message) for message in errors))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
