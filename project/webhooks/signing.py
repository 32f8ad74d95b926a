"""Standard Webhooks signatures (https://www.standardwebhooks.com/, the spec Svix publishes).

- A secret is `whsec_` + base64 of random bytes (`new_secret`: 32 bytes). The HMAC key is the
  base64-DECODED bytes after the prefix, not the text.
- The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, body the exact bytes sent.
- `webhook-signature` is `v1,<base64 of HMAC-SHA256>`; several space-separated signatures when
  an endpoint has more than one live secret (rotation), any of which a receiver accepts.
- Every attempt is signed again with the current time (receivers refuse old timestamps) and
  keeps the event's `webhook-id`, which receivers use to drop a repeat.

The body is built once per event from what the event row holds (`event_body`): the same bytes at
every attempt and to every endpoint.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
# The spec's bounds on the key: at least 24 bytes, at most 64.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
USER_AGENT = "Stockroom-Webhooks/1"


class InvalidSecret(ValueError):
    """A secret that is not `whsec_` + base64 of 24 to 64 bytes."""


def new_secret(nbytes: int = SECRET_BYTES) -> str:
    """A new endpoint secret: `whsec_` + base64 of `nbytes` random bytes (24 to 64)."""
    if not SECRET_MIN_BYTES <= nbytes <= SECRET_MAX_BYTES:
        raise ValueError(f"a secret has {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the bytes its base64 part decodes to. InvalidSecret if malformed."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook secret is whsec_ followed by base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise InvalidSecret(f"a webhook secret's key has {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes")
    return key


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `body` as sent with this id and timestamp."""
    content = f"{webhook_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(*, secrets: str | Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the Standard Webhooks three, content type and user agent."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise InvalidSecret("an endpoint needs a secret to sign with")
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(
            sign(secret=key, webhook_id=webhook_id, timestamp=timestamp, body=body) for key in keys
        ),
    }


def event_timestamp(created_at: datetime) -> str:
    """An event's time in its body: ISO 8601 in UTC with microseconds, `Z` for UTC."""
    return created_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_body(*, type: str, created_at: datetime, payload: Mapping) -> bytes:
    """The body of an event: `{"type", "timestamp", "data"}` as compact JSON with sorted keys, so
    the same event row gives the same bytes every time it is built (every attempt, every endpoint,
    every worker). Not ASCII-escaped: UTF-8, as application/json is."""
    document = {"type": type, "timestamp": event_timestamp(created_at), "data": payload}
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
