"""`/metrics` for Prometheus: with `Authorization: Bearer <METRICS_TOKEN>`, or from loopback where
`METRICS_ALLOW_LOOPBACK` says the scraper is on this host with no proxy in front (DESIGN.md §6).

A proxy on the same host makes every client it forwards loopback (`REMOTE_ADDR` is the proxy's),
so loopback is off in the production profile, a request carrying a proxy's forwarding header is
never taken for loopback, and project.observability.checks refuses a configuration with neither way in.
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponseForbidden
from django_prometheus.exports import ExportToDjangoView

# Headers a proxy adds: a request carrying one came through a proxy, whatever REMOTE_ADDR says.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _from_loopback(request) -> bool:
    if not settings.METRICS_ALLOW_LOOPBACK or any(header in request.META for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _has_token(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def metrics(request):
    if not (_from_loopback(request) or _has_token(request)):
        return HttpResponseForbidden("metrics are served with the metrics token (or to loopback where allowed)\n")
    # In gunicorn's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set) this sums every worker.
    return ExportToDjangoView(request)
