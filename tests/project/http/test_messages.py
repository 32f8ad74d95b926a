"""Flash messages through LazyMessageMiddleware: built only when used, kept across a redirect."""

from django.contrib import messages
from django.contrib.messages import get_messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject, empty

from project.http.middleware import LazyMessageMiddleware


def through_middleware(view, request):
    def get_response(request):
        return LazyMessageMiddleware(view)(request)

    return SessionMiddleware(get_response)(request)


def test_a_request_that_uses_no_messages_never_builds_the_storage_nor_sets_a_cookie():
    request = RequestFactory().get("/")

    response = through_middleware(lambda request: HttpResponse("plain"), request)

    assert request._messages._wrapped is empty
    assert "messages" not in response.cookies


def test_a_message_added_before_a_redirect_is_shown_by_the_next_request_once():
    factory = RequestFactory()

    def add(request):
        messages.success(request, "Order SR-1 placed.")
        return HttpResponse(status=302)

    def show(request):
        return HttpResponse(" | ".join(str(message) for message in get_messages(request)))

    first = through_middleware(add, factory.post("/orders"))
    cookie = first.cookies["messages"].value
    second = factory.get("/orders/SR-1")
    second.COOKIES["messages"] = cookie
    shown = through_middleware(show, second)
    third = factory.get("/orders/SR-1")
    third.COOKIES["messages"] = shown.cookies["messages"].value if "messages" in shown.cookies else ""
    again = through_middleware(show, third)

    assert shown.content == b"Order SR-1 placed."
    assert again.content == b""


def test_django_keeps_the_message_storage_where_the_lazy_middleware_puts_it():
    """The private Django behaviour LazyMessageMiddleware relies on: MessageMiddleware stores the
    storage on `request._messages`, the messages API reads it from there, and a SimpleLazyObject's
    `_wrapped` is `empty` until used."""
    request = RequestFactory().get("/")
    SessionMiddleware(lambda request: HttpResponse())(request)
    MessageMiddleware(lambda request: HttpResponse()).process_request(request)
    stored = request._messages
    assert get_messages(request) is stored

    lazy = SimpleLazyObject(lambda: stored)
    assert lazy._wrapped is empty
    request._messages = lazy
    messages.info(request, "read through the lazy object")
    assert lazy._wrapped is stored
