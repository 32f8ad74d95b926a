from datetime import timedelta

from django.db.models import QuerySet

from users.keys import key_matches, split_prefix
from users.models import ApiKey, User

LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_for_bearer(*, key: str) -> ApiKey | None:
    """The usable key matching `key` (with its user), or None. Constant-time comparison."""
    prefix = split_prefix(key)
    if prefix is None:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if api_key is None or not key_matches(key, api_key.hashed):
        return None
    if not api_key.is_usable() or not api_key.user.is_active:
        return None
    return api_key


def api_keys_of(*, user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")
