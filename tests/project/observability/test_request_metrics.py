"""Our PrometheusAfterMiddleware records exactly the series django-prometheus' own records."""

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from prometheus_client import REGISTRY

from project.observability.requests import PrometheusAfterMiddleware

LIBRARY = "django_prometheus.middleware.PrometheusAfterMiddleware"
OURS = "project.observability.requests.PrometheusAfterMiddleware"
# Seconds taken differ from run to run: only how many observations, not their sum or buckets.
TIMED = ("django_http_requests_latency_seconds_by_view_method", "django_http_requests_latency_including_middlewares")


def http_samples() -> dict:
    samples = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("django_http_"):
            continue
        for s in family.samples:
            if s.name.startswith(TIMED) and not s.name.endswith("_count"):
                continue
            if s.name.endswith("_created"):
                continue
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def recorded(middleware_path: str, send) -> dict:
    """The django_http_* samples that one request changed, and by how much."""
    stack = [middleware_path if path == OURS else path for path in settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=stack):
        before = http_samples()
        send(Client())
        after = http_samples()
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda client: client.get("/healthz"), id="a named view"),
        pytest.param(lambda client: client.get("/api/v1/no-such-route"), id="a 404"),
        pytest.param(
            lambda client: client.post(
                "/api/v1/auth/tokens",
                {"email": "x"},
                content_type="application/json",
                HTTP_X_REQUESTED_WITH="XMLHttpRequest",
            ),
            id="an ajax POST with a body",
        ),
    ],
)
def test_a_request_changes_the_same_series_by_the_same_amounts_as_the_library_middleware(db, send):
    ours = recorded(OURS, send)
    library = recorded(LIBRARY, send)

    assert ours == library
    assert any(name == "django_http_responses_total_by_status_view_method_total" for name, _ in ours)


def series() -> set:
    """Every labelled series in the registry (name and labels), whatever its value."""
    return {(s.name, tuple(sorted(s.labels.items()))) for family in REGISTRY.collect() for s in family.samples}


def test_invented_methods_add_no_series(db):
    client = Client()
    for path in ("/healthz", "/api/v1/no-such-route"):
        client.generic("BREW", path)  # the first ones may add the series for "other"
    before = series()

    for n in range(50):
        client.generic(f"INVENTED{n}", "/healthz")
        client.generic(f"INVENTED{n}", "/api/v1/no-such-route")

    assert series() == before


def test_every_method_label_of_an_invented_method_is_other(db):
    Client().generic("BREW", "/healthz")

    methods = {
        dict(labels)["method"]
        for name, labels in series()
        if name.startswith("django_http_") and "method" in dict(labels)
    }
    assert "BREW" not in methods
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "other"}


def test_odd_statuses_charsets_and_methods_in_exceptions_are_labelled_other(db):
    def respond(request):
        return HttpResponse(status=599, content_type="text/plain; charset=x-made-up")

    middleware = PrometheusAfterMiddleware(respond)
    request = RequestFactory().generic("BREW", "/healthz")
    middleware(request)
    middleware.process_exception(request, RuntimeError("boom"))

    labels = {(name, key, value) for name, pairs in series() for key, value in pairs}
    assert not any(value in {"599", "x-made-up", "BREW"} for _, _, value in labels)
    assert ("django_http_responses_total_by_status_total", "status", "other") in labels
    assert ("django_http_responses_total_by_charset_total", "charset", "other") in labels
