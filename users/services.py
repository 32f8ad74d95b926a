from datetime import timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from project.errors import DomainError, InvalidInput, NotFound
from users.keys import hash_key, new_key
from users.models import ApiKey, User
from users.selectors import LAST_USED_RESOLUTION


class InvalidCredentials(DomainError):
    status_code = 401
    code = "invalid_credentials"
    default_detail = "Email or password is wrong."


def api_key_create(
    *, user: User, name: str = "", scopes: list[str] | None = None, expires_in_days: int | None = None
) -> tuple[ApiKey, str]:
    """Create a key for `user`; returns the row and the full key, which is never stored.

    Scopes default to read + write; `staff` is refused for non-staff users.
    """
    scopes = sorted(set(scopes or [ApiKey.Scope.READ, ApiKey.Scope.WRITE]))
    unknown = [scope for scope in scopes if scope not in ApiKey.Scope.values]
    if unknown:
        raise InvalidInput(fields={"scopes": [f"Unknown scope: {', '.join(unknown)}"]})
    if ApiKey.Scope.STAFF in scopes and not user.is_staff:
        raise InvalidInput(fields={"scopes": ["Only staff can hold the staff scope."]})
    days = settings.API_KEY_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    prefix, key = new_key()
    with transaction.atomic():
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
