"""Placing an order: the switch between the two paths that do it.

- orders.placement.sql: the `conditional` strategy with ORDER_PLACEMENT_IN_SQL (the default),
  one call of orders_place_order (placement.sql), the idempotency key claimed inside it;
- orders.placement.orm: every other case, through the ORM, the key claimed and committed first
  (orders.idempotency).

Both take the same steps, checks and lock order, write the same rows and answer the same body
(orders.placement.body); tests/orders/placement compares them.
"""

from collections.abc import Callable, Sequence

from django.conf import settings

from orders.metrics import observe_order_placement
from orders.models import Order
from orders.placement.orm import place_through_orm
from orders.placement.request import OrderLineRequest, PlacedLines, PlacementResult
from orders.placement.sql import place_in_one_round_trip

__all__ = ["OrderLineRequest", "PlacedLines", "PlacementResult", "order_place"]


@observe_order_placement
def order_place(
    *,
    user,
    lines: Sequence[OrderLineRequest],
    shipping_address: dict,
    render: Callable[[Order, PlacedLines], dict],
    reference: str = "",
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> PlacementResult:
    """Place an order: reserve every line across warehouses by priority, or reserve nothing.

    `render(order, lines)` gives the body of a new order on the ORM path, which stores it on the
    key (order_payload for the API; `lines` are the order's lines with their allocations, at
    hand: no query); the SQL path builds the API's body itself.

    Idempotent per (user, key): the order and the key's stored response commit together. Domain
    refusals (4xx) are stored and replayed; anything else leaves no claim, so a retry runs again.
    The `conditional` strategy claims the key inside its one transaction (placement.sql); the
    others claim and commit it first, and drop the claim on failure. Raises InsufficientStock
    (409), InvalidInput (400), IdempotencyKeyReused (422), RequestInFlight (409), LockTimeout (503).
    """
    if settings.ORDER_PLACEMENT_IN_SQL and settings.STOCK_RESERVATION_STRATEGY == "conditional":
        return place_in_one_round_trip(
            user=user,
            lines=lines,
            shipping_address=shipping_address,
            reference=reference,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    return place_through_orm(
        user=user,
        lines=lines,
        shipping_address=shipping_address,
        render=render,
        reference=reference,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
