"""Errors as responses: the API envelope for DRF and Django errors, HTML pages for the rest.

409 is for domain conflicts only; lock timeouts and an unreachable database are 503 with Retry-After.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, OperationalError
from django.http import Http404, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from project.errors import RETRY_AFTER_SECONDS, DomainError, envelope
from project.middleware import request_too_large

logger = logging.getLogger("stockroom.errors")


def _flatten_codes(codes) -> str:
    if isinstance(codes, str):
        return codes
    if isinstance(codes, list) and codes:
        return _flatten_codes(codes[0])
    if isinstance(codes, dict) and codes:
        return _flatten_codes(next(iter(codes.values())))
    return "error"


def _field_messages(detail) -> dict:
    if isinstance(detail, dict):
        return {
            key: _field_messages(value) if isinstance(value, dict) else _messages(value)
            for key, value in detail.items()
        }
    return {}


def _messages(value) -> list:
    if isinstance(value, list):
        out = []
        for item in value:
            out.extend(_messages(item) if isinstance(item, list) else [_field_messages(item) or str(item)])
        return out
    return [str(value)]


def api_exception_handler(exc, context):
    """DRF's handler, reshaped into the envelope; domain and database errors mapped too."""
    if isinstance(exc, DomainError):
        response = Response(envelope(exc.code, exc.detail, exc.fields, **exc.extra), status=exc.status_code)
        if exc.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, OperationalError):
        logger.warning("database unavailable: %s", exc)
        response = Response(
            envelope("database_unavailable", "The database is unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    if isinstance(exc, DataError):
        # A value the database refused (a NUL byte in text, a number out of range): the request's
        # input, which a serializer or view should have refused first; a 400, logged to be found.
        logger.warning("the database refused a value of the request: %s", exc)
        return Response(envelope("invalid", "A value of this request cannot be stored."), status=400)
    # Django's own exceptions (get_object_or_404 in a view) become DRF's here, so they get the
    # envelope below instead of DRF's bare {"detail": ...}.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = _field_messages(detail) if isinstance(detail, dict) else {}
        non_field = fields.pop("non_field_errors", None)
        message = "; ".join(non_field) if non_field else "Invalid input."
        if isinstance(detail, list):
            message = "; ".join(_messages(detail)) or message
        response.data = envelope("invalid", message, fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = envelope(_flatten_codes(exc.get_codes()), str(exc.detail))
    return response


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse(envelope("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if _wants_json(request):
        return JsonResponse(envelope("server_error", "Something went wrong on our side."), status=500)
    return render(request, "500.html", status=500)


def bad_request(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return request_too_large(request)
    if _wants_json(request):
        return JsonResponse(envelope("bad_request", "Bad request."), status=400)
    return render(request, "400.html", status=400)


def permission_denied(request, exception=None):
    if _wants_json(request):
        return JsonResponse(envelope("permission_denied", "You do not have permission to do this."), status=403)
    return render(request, "403.html", status=403)
