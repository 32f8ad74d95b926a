"""Who may read /metrics (DESIGN.md §6): the token, or loopback where a setting says the scraper is
on the same host with no proxy in front; a system check refuses a configuration with neither."""

import pytest
from django.core.checks import Error, Warning

from project.observability.checks import metrics_access

OUTSIDE = "203.0.113.9"


def test_loopback_is_refused_unless_the_setting_allows_it(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    settings.METRICS_ALLOW_LOOPBACK = False

    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200

    settings.METRICS_ALLOW_LOOPBACK = True
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"])
def test_a_request_through_a_proxy_is_not_loopback(client, settings, header):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW_LOOPBACK = True

    proxied = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **{header: OUTSIDE})

    assert proxied.status_code == 403


def test_the_check_refuses_neither_a_token_nor_loopback(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW_LOOPBACK = False

    (error,) = metrics_access(None)

    assert isinstance(error, Error)
    assert error.id == "stockroom.E001"
    assert "METRICS_TOKEN" in error.msg and "METRICS_ALLOW_LOOPBACK" in error.msg


def test_the_check_accepts_a_token_or_loopback_without_a_proxy(settings):
    settings.RATELIMIT_TRUSTED_PROXIES = 0
    for token, loopback in [("s3cret", False), ("", True), ("s3cret", True)]:
        settings.METRICS_TOKEN, settings.METRICS_ALLOW_LOOPBACK = token, loopback
        assert metrics_access(None) == [], (token, loopback)


def test_the_check_warns_of_loopback_with_a_proxy_in_front(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW_LOOPBACK = True
    settings.RATELIMIT_TRUSTED_PROXIES = 1

    (warning,) = metrics_access(None)

    assert isinstance(warning, Warning)
    assert warning.id == "stockroom.W001"
