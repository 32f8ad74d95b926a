"""The Idempotency-Key header of the writes that take one (POST /orders, a purchase order's
receipt, POST /stock/levels/bulk) and the fingerprint that tells a replay of a request from
another request under the same key. Each app stores its keys its own way; this is the edge."""

import hashlib
import json
import re

from project.errors import IdempotencyKeyRequired, InvalidInput

KEY_MAX_LENGTH = 255
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


def idempotency_key(
    request, *, max_length: int = KEY_MAX_LENGTH, missing: type[IdempotencyKeyRequired] = IdempotencyKeyRequired
) -> str:
    """The request's Idempotency-Key: missing is 400 `idempotency_key_required` (`missing`, which
    words the detail for its endpoint), malformed (not 1 to `max_length` printable ASCII characters
    without spaces) 400 `invalid`."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise missing()
    if not (len(key) <= max_length and _PRINTABLE.fullmatch(key)):
        raise InvalidInput(fields={"Idempotency-Key": [f"1 to {max_length} printable ASCII characters, no spaces."]})
    return key


def request_fingerprint(method: str, path: str, body) -> str:
    """method + path + canonical JSON body: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()
