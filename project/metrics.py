"""`/metrics` for Prometheus: from loopback, or with `Authorization: Bearer <METRICS_TOKEN>`."""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponseForbidden
from django_prometheus.exports import ExportToDjangoView


def _from_loopback(request) -> bool:
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
        return HttpResponseForbidden("metrics are served to loopback or with the metrics token\n")
    # In gunicorn's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set) this sums every worker.
    return ExportToDjangoView(request)
