import pytest


def test_the_callers_request_id_is_returned(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="order-sync-42")

    assert response["X-Request-ID"] == "order-sync-42"


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 200, "new\nline"])
def test_a_missing_or_unsafe_request_id_is_replaced(client, sent):
    headers = {} if sent is None else {"HTTP_X_REQUEST_ID": sent}

    response = client.get("/healthz", **headers)

    assert len(response["X-Request-ID"]) == 32
    assert response["X-Request-ID"] != sent


def test_log_lines_written_during_a_request_carry_its_id(client, db, json_log):
    client.get("/api/v1/no-such-route", HTTP_X_REQUEST_ID="trace-me-7")

    lines = json_log()
    assert any(line["request_id"] == "trace-me-7" and line["level"] == "WARNING" for line in lines), lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
