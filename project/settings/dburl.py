"""Turn DATABASE_URL / REDIS_URL into settings, failing with one line that names the variable.

Every message shows the URL with its password replaced by `***` (`redact_url`): startup errors
end up in terminals, CI logs and crash reports.
"""

import re
from urllib.parse import unquote, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

REDACTED = "***"
# scheme://user:PASSWORD@ (the password may hold an unencoded '@': the last one before the path ends it)
_USERINFO_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*:)(?P<password>[^/?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with any password (in the user part or a `password=` parameter) replaced by ***."""
    url = _USERINFO_PASSWORD.sub(rf"\g<head>{REDACTED}@", url)
    return _QUERY_PASSWORD.sub(rf"\g<head>{REDACTED}", url)


def redact_text(text: str, url: str) -> str:
    """`text` (an error about `url`) with the URL redacted and its password nowhere in it."""
    text = text.replace(url, redact_url(url))
    matches = [_USERINFO_PASSWORD.match(url), *_QUERY_PASSWORD.finditer(url)]
    passwords = {match["password"] for match in matches if match is not None}
    for password in sorted(passwords | {unquote(p) for p in passwords}, key=len, reverse=True):
        if password:
            text = text.replace(password, REDACTED)
    return text


def parse_database_url(name: str, url: str) -> dict:
    shown = redact_url(url)
    scheme = urlsplit(url).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "postgis"}:
        raise ImproperlyConfigured(
            f"{name}={shown!r} is not a PostgreSQL URL (expected postgres://user@host:port/dbname)"
        )
    try:
        config = dj_database_url.parse(url)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={shown!r} cannot be parsed: {redact_text(str(exc), url)}") from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}={shown!r} names no database (add /dbname)")
    return config


def redis_url_with_db(name: str, url: str, db: int) -> str:
    """The same Redis server as `url`, on database number `db`."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name}={redact_url(url)!r} is not a Redis URL (expected redis://host:port/db)")
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        query = f"{query}&db={db}" if query else f"db={db}"
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
