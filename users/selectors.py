from datetime import timedelta

from django.db import connections, router
from django.db.models import QuerySet

from users.keys import key_matches, split_prefix
from users.models import ApiKey, User

LAST_USED_RESOLUTION = timedelta(minutes=1)


# Every API request authenticates, and the statement never changes: through the ORM (its join
# compiled each time) the lookup took about 1.0 ms of CPU, as written here 0.22 ms. The field lists
# name the columns in the SELECT's order and follow the models (tests/users/test_api_keys.py).
BEARER_KEY_FIELDS = (
    "id", "user_id", "name", "prefix", "hashed", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at"
)  # fmt: skip
BEARER_USER_FIELDS = (
    "id", "password", "last_login", "is_superuser", "email", "full_name", "is_staff", "is_active", "date_joined"
)  # fmt: skip
BEARER_LOOKUP_SQL = """
    SELECT k.id, k.user_id, k.name, k.prefix, k.hashed, k.scopes, k.created_at, k.expires_at, k.revoked_at,
           k.last_used_at,
           u.id, u.password, u.last_login, u.is_superuser, u.email, u.full_name, u.is_staff, u.is_active,
           u.date_joined
    FROM users_apikey k JOIN users_user u ON u.id = k.user_id
    WHERE k.prefix = %s
"""


def api_key_for_bearer(*, key: str) -> ApiKey | None:
    """The usable key matching `key` (with its user), or None. Constant-time comparison.

    One statement on the unique prefix, through Django's cursor (query metrics and the slow-query
    log see it like any other)."""
    prefix = split_prefix(key)
    if prefix is None:
        return None
    alias = router.db_for_read(ApiKey)
    with connections[alias].cursor() as cursor:
        cursor.execute(BEARER_LOOKUP_SQL, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    api_key = ApiKey.from_db(alias, BEARER_KEY_FIELDS, row[: len(BEARER_KEY_FIELDS)])
    if not key_matches(key, api_key.hashed):
        return None
    api_key.user = User.from_db(alias, BEARER_USER_FIELDS, row[len(BEARER_KEY_FIELDS) :])
    if not api_key.is_usable() or not api_key.user.is_active:
        return None
    return api_key


def api_keys_of(*, user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")
