"""Our signatures, checked by the Standard Webhooks reference library (standardwebhooks, Svix's):
an implementation independent of ours, so a misreading of the spec cannot hide in both."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from project.webhooks.signing import (
    InvalidSecret,
    event_body,
    new_secret,
    secret_key,
    sign,
    signed_headers,
)

WHEN = datetime(2026, 12, 5, 21, 15, 30, 123456, tzinfo=UTC)


def test_a_new_secret_is_whsec_and_base64_of_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert len(secret_key(new_secret(24))) == 24


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "sk_" + "A" * 44, "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_a_malformed_secret_is_refused(secret):
    with pytest.raises(InvalidSecret):
        secret_key(secret)


def test_the_reference_library_verifies_our_headers_and_body():
    secret = new_secret()
    body = event_body(type="order.placed", created_at=WHEN, payload={"order": {"number": "R-1", "total": "9.90"}})
    headers = signed_headers(secrets=secret, webhook_id="msg_abc", timestamp=int(time.time()), body=body)

    assert Webhook(secret).verify(body, headers) == {
        "type": "order.placed",
        "timestamp": "2026-12-05T21:15:30.123456Z",
        "data": {"order": {"number": "R-1", "total": "9.90"}},
    }
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Stockroom-Webhooks/1"
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"].isdigit()


def test_the_key_is_the_decoded_bytes_not_the_text():
    secret = new_secret()
    ours = sign(secret=secret, webhook_id="msg_1", timestamp=1_700_000_000, body=b'{"a":1}')
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(1_700_000_000, tz=UTC), b'{"a":1}')
    assert ours == theirs
    # The reference library keyed with the secret's text instead would not match.
    assert ours != Webhook(secret.encode()).sign("msg_1", datetime.fromtimestamp(1_700_000_000, tz=UTC), b'{"a":1}')


def test_a_changed_body_id_or_timestamp_fails_verification():
    secret = new_secret()
    body = event_body(type="order.paid", created_at=WHEN, payload={"n": 1})
    now = int(time.time())
    headers = signed_headers(secrets=secret, webhook_id="msg_1", timestamp=now, body=body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"n":1', b'"n":2'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-timestamp": str(now + 1)})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_two_live_secrets_give_two_signatures_and_either_verifies():
    old, new = new_secret(), new_secret()
    body = b'{"rotating":true}'
    headers = signed_headers(secrets=[old, new], webhook_id="msg_r", timestamp=int(time.time()), body=body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers) == {"rotating": True}
    assert Webhook(new).verify(body, headers) == {"rotating": True}


def test_a_stale_timestamp_is_refused_by_receivers_so_each_attempt_is_signed_anew():
    secret = new_secret()
    body = b"{}"
    stale = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, signed_headers(secrets=secret, webhook_id="m", timestamp=stale, body=body))


def test_the_body_is_the_same_bytes_every_time_it_is_built():
    payload = {"b": [1, 2, {"z": "é", "a": None}], "a": "x"}
    first = event_body(type="stock.low", created_at=WHEN, payload=payload)
    again = event_body(type="stock.low", created_at=WHEN.astimezone(), payload=dict(reversed(payload.items())))
    assert first == again
    assert json.loads(first)["data"] == payload
    assert "é".encode() in first  # UTF-8, not \\u escapes
