from django.core.signals import request_finished
from django.dispatch import receiver

from project.logs import clean_request_id, request_id_var

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Take the caller's X-Request-ID (or make one), log with it, and return it.

    The id stays set until the response is closed: Django logs 4xx/5xx responses
    after the middleware chain has returned, and those lines need the id too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="stockroom.forget_request_id")
def _forget_request_id(**kwargs):
    request_id_var.set(None)
