"""What a request is, read from its path and headers alone: no app, no database, no cache.

`request.path_info` is the path inside the site, whatever prefix (SCRIPT_NAME) the site is mounted
under, so these answers do not change when a proxy mounts the shop below a path.
"""

from django.conf import settings

API_PREFIX = "/api/"


def is_api_request(request) -> bool:
    """Under /api/: errors answer with the JSON envelope, and the API's rate-limit groups apply."""
    return request.path_info.startswith(API_PREFIX)


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value, or None (not bearer, or empty)."""
    keyword, _, token = authorization.partition(" ")
    if keyword.lower() != "bearer":
        return None
    return token.strip() or None


def carries_credentials(request) -> bool:
    """Whether the request presents credentials: an `Authorization: Bearer <key>` header or a
    session cookie. Presence only, never checked here (that is authentication's work, later)."""
    if bearer_token(request.META.get("HTTP_AUTHORIZATION", "")) is not None:
        return True
    return bool(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
