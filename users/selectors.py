import unicodedata
from datetime import timedelta

from django.db import connection, connections, router
from django.db.models import QuerySet

from users.keys import key_matches, split_prefix
from users.models import ApiKey, User

LAST_USED_RESOLUTION = timedelta(minutes=1)


# Every API request authenticates, and the statement never changes: through the ORM (its join
# compiled each time) the lookup took about 1.0 ms of CPU, this fixed statement 0.22 ms. Its columns
# come from the models, in their order, so Model.from_db takes each half of the row as it is.
BEARER_KEY_FIELDS = [field.attname for field in ApiKey._meta.concrete_fields]
BEARER_USER_FIELDS = [field.attname for field in User._meta.concrete_fields]
_quote = connection.ops.quote_name
_BEARER_COLUMNS = ", ".join(
    [f"k.{_quote(field.column)}" for field in ApiKey._meta.concrete_fields]
    + [f"u.{_quote(field.column)}" for field in User._meta.concrete_fields]
)
# Identifiers from the models' metadata only; the prefix is a parameter.
BEARER_LOOKUP_SQL = (
    f"SELECT {_BEARER_COLUMNS} FROM users_apikey k JOIN users_user u ON u.id = k.user_id WHERE k.prefix = %s"  # noqa: S608
)


def api_key_for_bearer(*, key: str) -> ApiKey | None:
    """The usable key matching `key` (with its user), or None. Constant-time comparison.

    One statement on the unique prefix, prepared on each pooled connection after its first five
    runs (project.db.backend's prepared_cursor; query metrics and the slow-query log see it like
    any other)."""
    prefix = split_prefix(key)
    if prefix is None:
        return None
    alias = router.db_for_read(ApiKey)
    with connections[alias].prepared_cursor() as cursor:
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


def _same_email(a: str, b: str) -> bool:
    # As Django's PasswordResetForm compares: Unicode-aware, case-insensitive.
    return unicodedata.normalize("NFKC", a).casefold() == unicodedata.normalize("NFKC", b).casefold()


def users_for_password_reset(*, email: str) -> list[User]:
    """The active users at `email` (any case) with a usable password: who may get a reset email."""
    users = User.objects.filter(email__iexact=email, is_active=True)
    return [user for user in users if user.has_usable_password() and _same_email(email, user.email)]
