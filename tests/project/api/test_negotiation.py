"""project.api.negotiation: DRF's content negotiation with its answers remembered. Every answer is
DRF's own, the first time and from memory, for each renderer set and format; at most
MAX_REMEMBERED answers are kept, and the API still answers 406 in the error envelope."""

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer, TemplateHTMLRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from project.api import negotiation
from project.api.negotiation import RememberingContentNegotiation
from project.api.renderers import OrjsonRenderer

ACCEPT_HEADERS = [
    None,
    "*/*",
    "application/json",
    "application/json; indent=4",
    "application/*",
    "text/html",
    "text/html, application/json;q=0.9",
    "text/html;q=0.5, */*;q=0.1",
    "image/png",
    "not a media type",
    "",
]
RENDERER_SETS = [
    [OrjsonRenderer],
    [OrjsonRenderer, BrowsableAPIRenderer],
    [TemplateHTMLRenderer, JSONRenderer],
]


@pytest.fixture(autouse=True)
def forget(monkeypatch):
    monkeypatch.setattr(RememberingContentNegotiation, "_answers", {})


def _request(accept: str | None, query: str = "") -> Request:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().get(f"/api/v1/products{query}", **headers))


def _answer(negotiator, accept, renderer_classes, query="", suffix=None):
    renderers = [cls() for cls in renderer_classes]
    try:
        renderer, media_type = negotiator.select_renderer(_request(accept, query), renderers, suffix)
    except NotAcceptable:
        return "406"
    except Http404:  # a format no renderer has
        return "404"
    return renderers.index(renderer), media_type


def test_each_answer_is_drfs_the_first_time_and_from_memory():
    # One memory for every combination, so an answer kept for one renderer set or format and
    # wrongly given to another shows.
    for _ in range(2):
        for renderer_classes in RENDERER_SETS:
            for query, suffix in [("", None), ("?format=json", None), ("", "json"), ("?format=api", None)]:
                for accept in ACCEPT_HEADERS:
                    expected = _answer(DefaultContentNegotiation(), accept, renderer_classes, query, suffix)
                    answer = _answer(RememberingContentNegotiation(), accept, renderer_classes, query, suffix)
                    assert answer == expected, (renderer_classes, query, suffix, accept)


def test_the_renderer_returned_is_this_requests_instance():
    renderers = [OrjsonRenderer()]
    for _ in range(2):
        renderer, _ = RememberingContentNegotiation().select_renderer(_request("*/*"), renderers)
        assert renderer is renderers[0]


def test_at_most_max_remembered_answers_are_kept_and_later_ones_are_still_right():
    for n in range(negotiation.MAX_REMEMBERED + 40):
        accept = f"application/json;q=0.{n % 9 + 1}, text/x-{n}"
        expected = _answer(DefaultContentNegotiation(), accept, [OrjsonRenderer])
        assert _answer(RememberingContentNegotiation(), accept, [OrjsonRenderer]) == expected
    assert len(RememberingContentNegotiation._answers) == negotiation.MAX_REMEMBERED
    assert _answer(RememberingContentNegotiation(), "text/x-never-seen", [OrjsonRenderer]) == "406"


@pytest.mark.django_db
def test_the_api_answers_406_in_the_envelope_each_time(client):
    for _ in range(2):
        response = client.get("/api/v1/products", HTTP_ACCEPT="text/html")
        assert response.status_code == 406
        assert response.json()["error"]["code"] == "not_acceptable"
        assert client.get("/api/v1/products", HTTP_ACCEPT="application/json").status_code == 200
