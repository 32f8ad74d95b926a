"""Every locking queryset of the orders app.

System-wide lock order: order rows (pk ascending), then their lines and shipments, then stock
levels by pk (inventory.locks). Order lines and allocations are immutable once written, so transitions lock
the order row only and then the stock levels through the inventory primitives.
"""

from collections.abc import Iterable

from orders.models import Order, Shipment


def lock_order(order_id: int) -> Order | None:
    return Order.objects.select_for_update(of=("self",)).filter(pk=order_id).order_by("pk").first()


def lock_orders(order_ids: Iterable[int]) -> list[Order]:
    ids = sorted(set(order_ids))
    return list(Order.objects.select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk"))


def lock_shipment(*, order_id: int, shipment_id: int) -> Shipment | None:
    """One shipment of an order, locked after its order row (the caller holds that already)."""
    return (
        Shipment.objects.select_for_update(of=("self",))
        .prefetch_related("lines")
        .filter(pk=shipment_id, order_id=order_id)
        .order_by("pk")
        .first()
    )


def lock_orders_skip_locked(order_ids: Iterable[int]) -> list[Order]:
    """For batch jobs: the orders no one else holds, in pk order; the others are left for later."""
    ids = sorted(set(order_ids))
    return list(Order.objects.select_for_update(of=("self",), skip_locked=True).filter(pk__in=ids).order_by("pk"))


# The expiry sweep claims its chunks with FOR UPDATE SKIP LOCKED inside orders_expire_chunk
# (orders/expiry.sql), in the same lock order: order rows, then stock levels by pk.
