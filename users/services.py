from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from project.errors import DomainError, InvalidInput, NotFound
from project.values import is_whole_number
from users.emails import password_reset_email_enqueue
from users.keys import hash_key, new_key
from users.models import ApiKey, User
from users.selectors import LAST_USED_RESOLUTION, users_for_password_reset


class InvalidCredentials(DomainError):
    status_code = 401
    code = "invalid_credentials"
    default_detail = "Email or password is wrong."


class TooManyKeys(DomainError):
    code = "too_many_keys"
    default_detail = "You hold as many live API keys as allowed; revoke one first."


def _live_keys(*, user: User) -> QuerySet[ApiKey]:
    now = timezone.now()
    return ApiKey.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), user=user, revoked_at__isnull=True)


def api_key_create(
    *, user: User, name: str = "", scopes: list[str] | None = None, expires_in_days: int | None = None
) -> tuple[ApiKey, str]:
    """Create a key for `user`; returns the row and the full key, which is never stored.

    Scopes default to read + write; `staff` is refused for non-staff users. A key lives at most
    API_KEY_MAX_DAYS (longer is InvalidInput; the default is capped to it). A user holds at most
    API_KEYS_MAX_PER_USER live keys (TooManyKeys): each key has its own rate budget, so the cap
    bounds what one user can spend. The user's row is locked while counting, so two requests
    racing at the cap create one key between them.
    """
    scopes = sorted(set(scopes or [ApiKey.Scope.READ, ApiKey.Scope.WRITE]))
    unknown = [scope for scope in scopes if scope not in ApiKey.Scope.values]
    if unknown:
        raise InvalidInput(fields={"scopes": [f"Unknown scope: {', '.join(unknown)}"]})
    if ApiKey.Scope.STAFF in scopes and not user.is_staff:
        raise InvalidInput(fields={"scopes": ["Only staff can hold the staff scope."]})
    longest = settings.API_KEY_MAX_DAYS
    days = min(settings.API_KEY_DEFAULT_DAYS, longest) if expires_in_days is None else expires_in_days
    if not is_whole_number(days, minimum=1, maximum=longest):
        raise InvalidInput(fields={"expires_in_days": [f"Must be a whole number of days from 1 to {longest}."]})
    prefix, key = new_key()
    with transaction.atomic():
        # The user's row is the lock of its set of keys (a password change takes it too).
        list(User.objects.select_for_update(of=("self",)).filter(pk=user.pk).values_list("pk"))
        if _live_keys(user=user).count() >= settings.API_KEYS_MAX_PER_USER:
            raise TooManyKeys(
                f"You already hold the most live API keys allowed (at most {settings.API_KEYS_MAX_PER_USER}); "
                "revoke one first."
            )
        api_key = ApiKey.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            hashed=hash_key(key),
            scopes=scopes,
            expires_at=timezone.now() + timedelta(days=days),
        )
    return api_key, key


def api_key_create_with_password(
    *, email: str, password: str, name: str = "", scopes: list[str] | None = None, expires_in_days: int | None = None
) -> tuple[ApiKey, str]:
    user = authenticate(email=email.strip().lower(), password=password)
    if user is None:
        raise InvalidCredentials()
    return api_key_create(user=user, name=name, scopes=scopes, expires_in_days=expires_in_days)


def api_key_revoke(*, user: User, prefix: str) -> ApiKey:
    """Revoke one of `user`'s keys (idempotent: revoking twice keeps the first time)."""
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update(of=("self",)).filter(user=user, prefix=prefix).first()
        if api_key is None:
            raise NotFound("No such key.")
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record use at most once a minute per key: a conditional UPDATE, so racing requests write once."""
    now = timezone.now()
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


def api_keys_purge(*, older_than_days: int) -> int:
    """Delete keys revoked or expired more than `older_than_days` ago. Returns how many."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    with transaction.atomic():
        revoked, _ = ApiKey.objects.filter(revoked_at__lt=cutoff).delete()
        expired, _ = ApiKey.objects.filter(expires_at__lt=cutoff).delete()
    return revoked + expired


def user_ensure(*, email: str, password: str, is_staff: bool = False, is_superuser: bool = False) -> User:
    """The user with `email`, created with these attributes if missing (an existing one is left alone)."""
    with transaction.atomic():
        user = User.objects.filter(email=email.lower()).first()
        if user is None:
            user = User.objects.create_user(
                email=email, password=password, is_staff=is_staff, is_superuser=is_superuser
            )
    return user


def user_password_set(*, user: User, password: str | None, revoke_api_keys: bool) -> int:
    """Set `user`'s password (None: an unusable one) and, if asked, revoke every key of theirs not yet
    revoked, in one transaction: keys end with the password change meant to end them, or neither
    happens. Locks the user's row (as api_key_create does, so no key is created meanwhile). Returns
    how many keys were revoked."""
    with transaction.atomic():
        if password is None:
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.save(update_fields=["password"])
        if not revoke_api_keys:
            return 0
        return ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


def password_reset_request(*, email: str, domain: str, use_https: bool) -> int:
    """Ask for a reset email to each active user with a usable password at `email` (the outbox, in
    this transaction); returns how many. Nothing is sent here and the same query runs whether the
    address has an account or not, so the answer's timing does not tell. The outbox row holds the
    user id and the link's domain and protocol, never the token: the task makes it when it sends."""
    with transaction.atomic():
        users = users_for_password_reset(email=email)
        for user in users:
            password_reset_email_enqueue(user_id=user.pk, domain=domain, use_https=use_https)
    return len(users)
