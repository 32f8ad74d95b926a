"""Degraded mode: mark responses served from the last good cache, and answer 503 when the
database is unreachable instead of a 500 page.
"""

import logging
from contextvars import ContextVar

from django.db import OperationalError
from django.http import JsonResponse
from django.shortcuts import render

from project.db.transactions import is_lock_error
from project.errors import RETRY_AFTER_SECONDS, envelope
from project.http.requests import is_api_request

logger = logging.getLogger("stockroom.degraded")

_served_stale: ContextVar[bool] = ContextVar("served_stale", default=False)


def mark_stale() -> None:
    """This response carries data kept from before the database became unreachable."""
    _served_stale.set(True)


class DegradedModeMiddleware:
    """Adds `X-Stale: true` to stale answers; turns an unreachable database into a 503."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _served_stale.set(False)
        try:
            response = self.get_response(request)
            if _served_stale.get():
                response["X-Stale"] = "true"
            return response
        finally:
            _served_stale.reset(token)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError) or is_lock_error(exception):
            return None
        logger.warning("database unavailable: %s", exception)
        if is_api_request(request):
            response = JsonResponse(
                envelope("database_unavailable", "The database is unavailable; retry shortly."), status=503
            )
        else:
            response = render(request, "503.html", status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
