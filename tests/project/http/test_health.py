from urllib.parse import urlsplit

import redis

from tests.support import TcpProxy, closed_port


def test_healthz_answers_without_touching_the_database(client):
    # No `db` fixture: any database access in this request would raise.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_database_cache_and_broker_answer(client, db):
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": {"ok": True}, "cache": {"ok": True}, "broker": {"ok": True}}


def test_readyz_is_503_and_names_redis_when_it_is_unreachable(client, db, settings):
    port = closed_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/14"
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/15"

    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["cache"]["ok"] is False
    assert checks["broker"]["ok"] is False
    assert "ConnectionError" in checks["cache"]["error"]


def test_metrics_are_refused_from_outside_loopback_without_the_token(client, settings):
    settings.METRICS_TOKEN = "s3cret"

    outside = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    with_token = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret")
    loopback = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert outside.status_code == 403
    assert with_token.status_code == 200
    assert loopback.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in loopback.content


def redis_proxy(url: str) -> TcpProxy:
    parts = urlsplit(url)
    return TcpProxy(parts.hostname, parts.port or 6379).start()


def test_readyz_reuses_its_redis_connections_across_calls(client, db, settings):
    cache_proxy, broker_proxy = redis_proxy(settings.REDIS_URL), redis_proxy(settings.CELERY_BROKER_URL)
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{cache_proxy.port}/14"
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{broker_proxy.port}/15"

        answers = [client.get("/readyz").status_code for _ in range(5)]

        assert answers == [200] * 5
        assert (cache_proxy.connections, broker_proxy.connections) == (1, 1)
    finally:
        cache_proxy.close()
        broker_proxy.close()


def test_readyz_names_the_failed_check_and_its_error_class_but_no_host_or_port(client, db, settings):
    port = closed_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/14"
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/15"

    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["cache"] == {"ok": False, "error": "ConnectionError"}
    assert checks["broker"] == {"ok": False, "error": "ConnectionError"}
    assert str(port).encode() not in response.content
    assert b"127.0.0.1" not in response.content


def test_readyz_answers_ready_at_once_when_its_kept_connection_was_closed_meanwhile(client, db, settings):
    proxy = redis_proxy(settings.REDIS_URL)
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/14"
        assert client.get("/readyz").status_code == 200
        (_, upstream), *_ = proxy._pairs
        host, port = upstream.getsockname()[:2]
        admin = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        assert admin.client_kill(f"{host}:{port}")  # as a Redis restart or its idle timeout would

        assert client.get("/readyz").status_code == 200
        assert proxy.connections == 2
        admin.close()
    finally:
        proxy.close()
