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
from project.http.middleware import request_too_large
from project.http.requests import is_api_request

logger = logging.getLogger("stockroom.errors")


def _flatten_codes(codes) -> str:
    if isinstance(codes, str):
        return codes
    if isinstance(codes, list) and codes:
        return _flatten_codes(codes[0])
    if isinstance(codes, dict) and codes:
        return _flatten_codes(next(iter(codes.values())))
    return "error"


# An error envelope stays small whatever the input: a list of 100,000 bad items must not answer
# with 100,000 messages (DESIGN.md §6). At most MAX_ERROR_MESSAGES messages, in the order the
# serializer gave them; `fields` nested at most MAX_ERROR_DEPTH dicts deep (deeper errors are
# collapsed into their parent's list of messages); each message and key cut to MAX_MESSAGE_CHARS.
# The walk itself stops after MAX_ERROR_NODES entries, so even empty entries cannot make it long.
MAX_ERROR_MESSAGES = 50
MAX_ERROR_DEPTH = 4
MAX_MESSAGE_CHARS = 500
MAX_ERROR_NODES = 20 * MAX_ERROR_MESSAGES
CUT_NOTE = f"Only the first {MAX_ERROR_MESSAGES} errors are shown."


class _Budget:
    """What is left to spend on one envelope: messages to show and entries to look at."""

    def __init__(self):
        self.messages = MAX_ERROR_MESSAGES
        self.nodes = MAX_ERROR_NODES
        self.cut = False

    def visit(self) -> bool:
        if self.messages <= 0 or self.nodes <= 0:
            self.cut = True
            return False
        self.nodes -= 1
        return True

    def message(self, value) -> list[str]:
        self.messages -= 1
        return [_text(value)]


def _text(value) -> str:
    text = str(value)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _field_messages(detail, budget: _Budget, depth: int = 1) -> dict:
    out = {}
    if not isinstance(detail, dict):
        return out
    for key, value in detail.items():
        if not budget.visit():
            break
        if isinstance(value, dict) and depth < MAX_ERROR_DEPTH:
            nested = _field_messages(value, budget, depth + 1)
        else:
            nested = _messages(value, budget, depth)
        if nested or not budget.cut:
            out[_text(key)] = nested
    return out


def _messages(value, budget: _Budget, depth: int) -> list:
    """A list of messages; a dict inside keeps its shape while there is depth left, else its
    messages join the list."""
    if isinstance(value, dict):
        if depth < MAX_ERROR_DEPTH:
            # Kept even when empty: in a list of items, `{}` marks an item without errors, so the
            # position of each item's errors still names the item.
            return [_field_messages(value, budget, depth + 1)]
        out = []
        for item in value.values():
            if not budget.visit():
                break
            out.extend(_messages(item, budget, depth))
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            if not budget.visit():
                break
            out.extend(_messages(item, budget, depth) if isinstance(item, (list, dict)) else budget.message(item))
        return out
    return budget.message(value) if budget.visit() else []


def bounded_fields(fields: dict) -> tuple[dict, bool]:
    """`fields` of an envelope within the bounds above, and whether anything was left out."""
    budget = _Budget()
    bounded = _field_messages(fields, budget)
    return bounded, budget.cut


def api_exception_handler(exc, context):
    """DRF's handler, reshaped into the envelope; domain and database errors mapped too."""
    if isinstance(exc, DomainError):
        fields, _ = bounded_fields(exc.fields)
        response = Response(envelope(exc.code, exc.detail, fields, **exc.extra), status=exc.status_code)
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
        budget = _Budget()
        fields = _field_messages(detail, budget) if isinstance(detail, dict) else {}
        non_field = fields.pop("non_field_errors", None)
        message = "; ".join(str(item) for item in non_field) if non_field else "Invalid input."
        if isinstance(detail, list):
            message = "; ".join(str(item) for item in _messages(detail, budget, 1)) or message
        if budget.cut:
            message = f"{message} {CUT_NOTE}"
        response.data = envelope("invalid", message, fields)
    elif isinstance(exc, exceptions.APIException):
        response.data = envelope(_flatten_codes(exc.get_codes()), _text(exc.detail))
    return response


def page_not_found(request, exception=None):
    if is_api_request(request):
        return JsonResponse(envelope("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if is_api_request(request):
        return JsonResponse(envelope("server_error", "Something went wrong on our side."), status=500)
    return render(request, "500.html", status=500)


def bad_request(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return request_too_large(request)
    if is_api_request(request):
        return JsonResponse(envelope("bad_request", "Bad request."), status=400)
    return render(request, "400.html", status=400)


def permission_denied(request, exception=None):
    if is_api_request(request):
        return JsonResponse(envelope("permission_denied", "You do not have permission to do this."), status=403)
    return render(request, "403.html", status=403)
