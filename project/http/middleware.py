from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.utils.functional import SimpleLazyObject, empty

from project.errors import envelope
from project.http.requests import carries_credentials, is_api_request
from project.observability.logs import clean_request_id, request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_META = "HTTP_X_REQUEST_ID"  # read from META: request.headers would copy every header first


class RequestIdMiddleware:
    """Take the caller's X-Request-ID (or make one), log with it, and return it.

    The id stays set until the response is closed: Django logs 4xx/5xx responses
    after the middleware chain has returned, and those lines need the id too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = clean_request_id(request.META.get(REQUEST_ID_META))
        request.request_id = request_id
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="stockroom.forget_request_id")
def _forget_request_id(**kwargs):
    request_id_var.set(None)


def request_too_large(request, limit: int | None = None) -> HttpResponse:
    """413: the envelope under /api/, a line of text for pages."""
    detail = "The request body is too large."
    if limit is not None:
        detail = f"The request body is too large (at most {limit} bytes here)."
    if is_api_request(request):
        return JsonResponse(envelope("request_too_large", detail), status=413)
    return HttpResponse(detail + "\n", status=413, content_type="text/plain; charset=utf-8")


class RequestBodyLimitMiddleware:
    """Refuse bodies above MAX_REQUEST_BODY_BYTES with 413, from Content-Length, before anything
    reads them.

    The CSV upload paths (IMPORT_UPLOAD_PATHS) allow IMPORT_MAX_UPLOAD_BYTES, but only to a request
    that carries credentials (`carries_credentials`): an anonymous caller gets the ordinary limit,
    so it cannot make the server take a large body it will refuse anyway. A caller with a made-up
    key or cookie passes this check and is refused by authentication, which the upload views run
    before they read the body (the admin's upload view checks staff before CSRF reads its form).

    A body sent without Content-Length (chunked) is never read by Django's WSGI request, so the
    header is the whole story. Django's own RequestDataTooBig (form fields above
    DATA_UPLOAD_MAX_MEMORY_SIZE) is answered 413 by the 400 handler in project.http.error_views.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads no body at all then
        if length:
            limit = settings.MAX_REQUEST_BODY_BYTES
            if request.path_info.startswith(tuple(settings.IMPORT_UPLOAD_PATHS)) and carries_credentials(request):
                limit = settings.IMPORT_MAX_UPLOAD_BYTES
            if length > limit:
                return request_too_large(request, limit)
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Content-Security-Policy on every response (a view may set its own): 'self' only, except
    Swagger UI's page, which needs inline script and style."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            policy = settings.CONTENT_SECURITY_POLICY
            if request.path_info == settings.CONTENT_SECURITY_POLICY_API_DOCS_PATH:
                policy = settings.CONTENT_SECURITY_POLICY_API_DOCS
            if policy:
                response["Content-Security-Policy"] = policy
        return response


class LazyMessageMiddleware(MessageMiddleware):
    """Django's MessageMiddleware, building the message storage (a cookie signer and two
    backends) only for a request that reads or adds a message; most requests do neither.

    The one place we lean on Django's private side of messages: the storage lives on
    `request._messages` (where MessageMiddleware puts it and django.contrib.messages.api reads it)
    and a SimpleLazyObject's `_wrapped` is `empty` until first used.
    tests/project/http/test_messages.py fails if either changes."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response  # never built: nothing was read, nothing to store
        return super().process_response(request, response)
