"""Idempotency keys of order placement: claim a key, store a refusal on it, drop a claim.

DESIGN §3: (user, key) is unique and one key creates at most one order. The ORM placement path
(orders.placement.orm) claims the key and commits the claim before its order transaction, stores
domain refusals (4xx) for replays and drops the claim on anything else, so a retry runs again.
The SQL path claims the key inside orders_place_order (orders/placement/placement.sql) and only
uses `store_refusal` here.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from orders.errors import IdempotencyKeyReused, RequestInFlight
from orders.models import IdempotencyKey
from project.errors import DomainError, envelope


def claim_idempotency_key(*, user, key: str, fingerprint: str) -> tuple[int | None, IdempotencyKey | None]:
    """Phase one, committed before the order transaction: claim the key or learn its fate.

    Returns (claim id, None) when this request may proceed, or (None, the key) when the key
    holds a complete first response to replay. Raises IdempotencyKeyReused (another body) or
    RequestInFlight (its twin is still running and its lease has not run out). A lease left by a
    crashed request is taken over.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    # One autocommit statement on the happy path: the claim is committed before the order starts.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO orders_idempotencykey (user_id, key, fingerprint, state, lease_expires_at, created_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (user_id, key) DO NOTHING
            RETURNING id
            """,
            [user.pk, key, fingerprint, IdempotencyKey.State.IN_FLIGHT, lease, now],
        )
        claimed = cursor.fetchone()
        if claimed is not None:
            return claimed[0], None
        existing = IdempotencyKey.objects.filter(user=user, key=key).first()
        if existing is None:  # pruned between the insert and the read: claim again
            return claim_idempotency_key(user=user, key=key, fingerprint=fingerprint)
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        if existing.state == IdempotencyKey.State.COMPLETE:
            return None, existing
        taken_over = IdempotencyKey.objects.filter(
            pk=existing.pk, state=IdempotencyKey.State.IN_FLIGHT, lease_expires_at__lt=now
        ).update(lease_expires_at=lease)
        if not taken_over:
            raise RequestInFlight()
        return existing.pk, None


def complete_claim(*, claim_id: int, body: dict, order_id: int) -> None:
    """Store the 201 response on the claim, in the order's transaction (they commit together).
    RequestInFlight if another request completed the key meanwhile (the transaction rolls back)."""
    completed = IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).update(
        state=IdempotencyKey.State.COMPLETE, response_status=201, response_body=body, order_id=order_id
    )
    if not completed:
        raise RequestInFlight("This Idempotency-Key was completed by another request.")


def store_refusal(claim_id: int, error: DomainError) -> None:
    """Complete the claim with a domain refusal (4xx), replayed to the same key and body."""
    body = envelope(error.code, error.detail, error.fields, **error.extra)
    IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).update(
        state=IdempotencyKey.State.COMPLETE, response_status=int(error.status_code), response_body=body
    )


def drop_claim(claim_id: int) -> None:
    """Forget a claim whose request failed for another reason (5xx, a crash): a retry runs again."""
    IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).delete()


@contextmanager
def settled_on_failure(claim_id: int | None) -> Iterator[None]:
    """Around the work a claim guards: a domain refusal (4xx) is stored on the claim and replayed
    to the same key and body; anything else (5xx, a crash, an interrupt) drops the claim, so the
    client's retry runs again. No claim (None): nothing to settle."""
    try:
        yield
    except DomainError as error:
        if claim_id is not None:
            if 400 <= error.status_code < 500:
                store_refusal(claim_id, error)
            else:
                drop_claim(claim_id)
        raise
    except BaseException:
        if claim_id is not None:
            drop_claim(claim_id)
        raise
