"""API key format and hashing: `sr_<prefix>_<secret>`; only HMAC-SHA256(pepper, key) is stored."""

import hashlib
import hmac
import secrets
import string

from django.conf import settings

from project.http.requests import bearer_token

KEY_MARK = "sr"
PREFIX_LENGTH = 10
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


def new_key() -> tuple[str, str]:
    """A fresh (prefix, full key)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return prefix, f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()


def split_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else None (so garbage never reaches the database)."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARK or len(parts[1]) != PREFIX_LENGTH or not parts[2]:
        return None
    if any(ch not in _PREFIX_ALPHABET for ch in parts[1]):
        return None
    return parts[1]


def key_matches(key: str, hashed: str) -> bool:
    return hmac.compare_digest(hash_key(key), hashed)


def ratelimit_claim(authorization: str) -> tuple[str, str] | None:
    """What the rate limiter (settings.RATELIMIT_BEARER_CLAIM) learns of an `Authorization`
    header: the prefix of the bearer key it names and a proof of the whole key, or None.

    The limiter charges the key's own budget only when this proof equals the one it learnt from
    a request this key authenticated, so a prefix alone spends nobody's budget. The proof is an
    HMAC under its own label, so the limiter's Redis never holds the stored hash."""
    key = bearer_token(authorization)
    prefix = split_prefix(key) if key else None
    if prefix is None:
        return None
    proof = hmac.new(settings.API_KEY_PEPPER.encode(), b"ratelimit\x00" + key.encode(), hashlib.sha256)
    return prefix, proof.hexdigest()
