"""Every locking queryset of the orders app.

System-wide lock order: order rows (pk ascending), then their lines, then stock levels by pk
(inventory.locks). Order lines and allocations are immutable once written, so transitions lock
the order row only and then the stock levels through the inventory primitives.
"""

from collections.abc import Iterable

from django.db.models import Q

from orders.models import Order


def lock_order(order_id: int) -> Order | None:
    return Order.objects.select_for_update(of=("self",)).filter(pk=order_id).order_by("pk").first()


def lock_orders(order_ids: Iterable[int]) -> list[Order]:
    ids = sorted(set(order_ids))
    return list(Order.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk"))


def lock_orders_skip_locked(order_ids: Iterable[int]) -> list[Order]:
    """For batch jobs: the orders no one else holds, in pk order; the others are left for later."""
    ids = sorted(set(order_ids))
    return list(Order.objects.select_for_update(of=("self",), skip_locked=True).filter(pk__in=ids).order_by("pk"))


def claim_expired_reservations(
    *, now, limit: int, order_ids: Iterable[int] | None = None, after: tuple | None = None
) -> list[tuple[int, str, object]]:
    """The expiry sweep's claim: up to `limit` reserved orders past their deadline that no one
    else holds, as (id, number, expires_at). In (expires_at, id) order, the partial index's, and
    after the previous chunk's last row (`after`): each chunk starts where the last one stopped
    instead of stepping over the index entries of the orders already expired. SKIP LOCKED never
    waits, so this order cannot deadlock; rows another sweeper holds are left for the next run."""
    orders = Order.objects.select_for_update(of=("self",), skip_locked=True).filter(
        status=Order.Status.RESERVED, expires_at__lte=now
    )
    if after is not None:
        orders = orders.filter(Q(expires_at__gt=after[0]) | Q(expires_at=after[0], pk__gt=after[1]))
    if order_ids is not None:
        orders = orders.filter(pk__in=sorted(set(order_ids)))
    # Tuples, not model instances: a chunk of thousands costs no object building.
    return list(orders.order_by("expires_at", "pk").values_list("pk", "number", "expires_at")[:limit])
