"""Scope-aware permissions. A session user holds every scope its role allows; a key holds its own."""

from rest_framework.permissions import BasePermission

from project.http.requests import bearer_token
from users.models import ApiKey
from users.selectors import api_key_for_bearer


def grants_staff(user, api_key: ApiKey | None) -> bool:
    """The one rule for staff rights: a signed-in staff user, and when the request came with an
    API key, a key holding the `staff` scope. A staff member's read or write key is an ordinary
    customer's key: it sees and changes only that member's own orders."""
    if not (user and user.is_authenticated and user.is_staff):
        return False
    return api_key is None or ApiKey.Scope.STAFF in api_key.scopes


def acts_as_staff(request) -> bool:
    """Whether this request may do what only staff may (see every order, filter by customer, ...).
    Every staff-dependent decision asks this, never `user.is_staff`."""
    return grants_staff(request.user, _request_key(request))


def may_profile(request) -> bool:
    """project.observability.profiling's question (settings.PROFILING_ALLOWED), asked before DRF authenticates:
    staff rights from the session, else from a bearer key read here."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return grants_staff(user, None)
    key = bearer_token(request.META.get("HTTP_AUTHORIZATION", ""))
    if key is None:
        return False
    api_key = api_key_for_bearer(key=key)
    return api_key is not None and grants_staff(api_key.user, api_key)


def has_scope(request, scope: str) -> bool:
    user = request.user
    if not (user and user.is_authenticated):
        return False
    if scope == ApiKey.Scope.STAFF:
        return acts_as_staff(request)
    api_key = _request_key(request)
    return api_key is None or scope in api_key.scopes


def _request_key(request) -> ApiKey | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKey) else None


class ReadScope(BasePermission):
    message = "This needs the read scope."

    def has_permission(self, request, view):
        return has_scope(request, ApiKey.Scope.READ)


class WriteScope(BasePermission):
    message = "This needs the write scope."

    def has_permission(self, request, view):
        return has_scope(request, ApiKey.Scope.WRITE)


class IsStaff(BasePermission):
    """Staff user, and with a key, a key holding the staff scope."""

    message = "This needs a staff account (and, with an API key, the staff scope)."

    def has_permission(self, request, view):
        return has_scope(request, ApiKey.Scope.STAFF)
