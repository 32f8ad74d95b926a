from tests.support import closed_port


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
