"""Liveness (`/healthz`, no I/O) and readiness (`/readyz`: database, cache, broker, each named).

`/readyz` is not rate-limited (load balancers poll it), so it is kept cheap: each process pings
Redis over a few connections of its own, kept between calls, and a failure is named by its check
and exception class only (the message would show hosts and ports; it goes to the log).
"""

import logging
import threading

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from project.db.redis import PerProcess, RedisConnections

logger = logging.getLogger("stockroom.health")

# Connections per Redis URL per process: a probe from each gunicorn thread at once at most; made on
# first use, so a process polled by one load balancer keeps one.
PROBE_CONNECTIONS = 4


class RedisProbes:
    """This process's connections for pinging each Redis URL the checks name."""

    def __init__(self):
        self._by_url: dict[str, RedisConnections] = {}
        self._lock = threading.Lock()

    def ping(self, url: str) -> None:
        connections = self._by_url.get(url)
        if connections is None:
            with self._lock:
                connections = self._by_url.setdefault(
                    url, RedisConnections(url, size=PROBE_CONNECTIONS, timeout=settings.REDIS_SOCKET_TIMEOUT)
                )
        try:
            connections.execute("PING")
        except redis.ConnectionError:
            # A kept connection that Redis (or a proxy) closed meanwhile fails once: try a new one.
            connections.execute("PING")

    def close(self) -> None:
        for connections in self._by_url.values():
            connections.close()


_probes = PerProcess(RedisProbes, RedisProbes.close)


@receiver(setting_changed, dispatch_uid="stockroom.health.reset")
def _reset_on_setting_change(setting, **kwargs):
    if setting in {"REDIS_URL", "CELERY_BROKER_URL", "REDIS_SOCKET_TIMEOUT"}:
        _probes.reset()


@require_GET
@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


CHECKS = {
    "database": _check_database,
    "cache": lambda: _probes.get().ping(settings.REDIS_URL),
    "broker": lambda: _probes.get().ping(settings.CELERY_BROKER_URL),
}


@require_GET
@never_cache
def readyz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # a readiness probe reports every failure, whatever its type
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True}
    ready = all(result["ok"] for result in results.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": results}, status=200 if ready else 503
    )
