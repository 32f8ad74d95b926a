"""Scope-aware permissions. A session user holds every scope its role allows; a key holds its own."""

from rest_framework.permissions import BasePermission

from users.models import ApiKey


def has_scope(request, scope: str) -> bool:
    user = request.user
    if not (user and user.is_authenticated):
        return False
    if scope == ApiKey.Scope.STAFF and not user.is_staff:
        return False
    if isinstance(request.auth, ApiKey):
        return scope in request.auth.scopes
    return True


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
