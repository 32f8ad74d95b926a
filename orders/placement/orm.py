"""Placing an order through the ORM: every strategy but `conditional` with ORDER_PLACEMENT_IN_SQL.

The idempotency key is claimed and committed first (orders.idempotency), then one transaction
writes the order, its lines, its email (outbox) and reserves stock last, through
inventory.services.reserve_stock: the order row, its lines, then stock levels by pk (DESIGN §4).
"""

from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone

from inventory import services as stock
from inventory.models import Product
from orders.events import order_event
from orders.idempotency import claim_idempotency_key, complete_claim, settled_on_failure
from orders.models import Allocation, Order, OrderLine
from orders.placement.body import placed_lines
from orders.placement.request import (
    OrderLineRequest,
    PlacedLines,
    PlacementResult,
    check_line_count,
    new_order_number,
    quantity_errors,
)
from project.db.transactions import atomic_with_retry
from project.errors import InvalidInput


def _products_for(lines: Sequence[OrderLineRequest]) -> list[tuple[Product, int]]:
    check_line_count(lines)
    products = {p.sku: p for p in Product.objects.filter(sku__in=[line.sku for line in lines])}
    problems, found = [], []
    for line in lines:
        product = products.get(line.sku)
        errors = {}
        if product is None:
            errors["sku"] = [f"Unknown SKU {line.sku!r}."]
        elif not product.active:
            errors["sku"] = [f"{line.sku!r} is no longer sold."]
        errors.update(quantity_errors(line))
        if not errors and product.max_per_order is not None and line.quantity > product.max_per_order:
            errors["quantity"] = [f"At most {product.max_per_order} of {line.sku!r} in one order."]
        problems.append(errors)
        found.append((product, line.quantity))
    if any(problems):
        raise InvalidInput(fields={"lines": problems})
    return found


# As orders_place_order counts (placement.sql): one advisory lock per customer and product (the same
# key), then the customer's units of the product in orders of the period that still stand.
CUSTOMER_LIMIT_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock(hashtextextended('orders_customer_limit:' || %s || ':' || %s, 0))"
)
CUSTOMER_BOUGHT_SQL = """
SELECT coalesce(sum(ol.quantity), 0)
  FROM orders_order o JOIN orders_orderline ol ON ol.order_id = o.id
 WHERE o.user_id = %s AND ol.product_id = %s AND o.created_at > %s - make_interval(days => %s)
   AND o.status NOT IN ('cancelled', 'expired')
"""


def _check_customer_limits(user, products: list[tuple[Product, int]], now) -> None:
    """InvalidInput naming each line above what its product's customer_limit leaves this customer:
    products in id order, each counted under its lock, so two orders at once cannot pass together."""
    problems = [{} for _ in products]
    limited = sorted((product.pk, n) for n, (product, _) in enumerate(products) if product.customer_limit is not None)
    with connection.cursor() as cursor:
        for product_id, n in limited:
            product, quantity = products[n]
            cursor.execute(CUSTOMER_LIMIT_LOCK_SQL, [str(user.pk), str(product_id)])
            cursor.execute(CUSTOMER_BOUGHT_SQL, [user.pk, product_id, now, product.customer_limit_days])
            bought = cursor.fetchone()[0]
            if bought + quantity > product.customer_limit:
                left = max(product.customer_limit - bought, 0)
                problems[n] = {
                    "quantity": [
                        f"{product.sku!r} is limited to {product.customer_limit} per customer every "
                        f"{product.customer_limit_days} days; {left} left for you."
                    ]
                }
    if any(problems):
        raise InvalidInput(fields={"lines": problems})


# A race lost after a hot take runs the whole order again (inventory.reservation._HotLoss): the ORM
# path's plan-to-commit window is wider than the SQL path's, so near a hot SKU's sell-out, with staff
# moving its levels, it gets more attempts than other services before answering 503.
ORM_PLACEMENT_ATTEMPTS = 8


@atomic_with_retry(attempts=ORM_PLACEMENT_ATTEMPTS)
def _create_order(
    *, user, lines: Sequence[OrderLineRequest], shipping_address: dict, reference: str, claim_id: int | None, render
) -> tuple[Order, dict]:
    products = _products_for(lines)
    now = timezone.now()
    _check_customer_limits(user, products, now)
    order = Order(
        number=new_order_number(),
        user=user,
        total=sum((product.price * quantity for product, quantity in products), Decimal("0.00")),
        currency=settings.SHOP_CURRENCY,
        reference=reference,
        expires_at=now + timedelta(minutes=settings.ORDER_RESERVATION_MINUTES),
        **{f"shipping_{field}": value for field, value in shipping_address.items()},
    )
    order.save()  # a number collision (32^8 numbers) raises IntegrityError: the caller draws again
    order_lines = OrderLine.objects.bulk_create(
        [
            OrderLine(order=order, product=product, quantity=quantity, unit_price=product.price)
            for product, quantity in products
        ]
    )
    order_event(order, "placed")  # email and webhook: commit with the order or not at all
    # Stock levels are locked last (the system's lock order) and held for as short as possible.
    allocations = stock.reserve_stock(lines=products, reference=order.number, actor=user)
    line_for_product = {line.product_id: line for line in order_lines}
    rows = Allocation.objects.bulk_create(
        [
            Allocation(
                line=line_for_product[a.product_id],
                stock_level_id=a.level_id,
                quantity=a.quantity,
                backordered=a.backordered,
            )
            for a in allocations
        ]
    )
    body = render(order, placed_lines(order_lines, products, rows, allocations))
    if claim_id is not None:
        complete_claim(claim_id=claim_id, body=body, order_id=order.pk)
    return order, body


def place_through_orm(
    *,
    user,
    lines: Sequence[OrderLineRequest],
    shipping_address: dict,
    render: Callable[[Order, PlacedLines], dict],
    reference: str,
    idempotency_key: str | None,
    fingerprint: str,
) -> PlacementResult:
    """Claim the key (committed), then place the order in one transaction with bounded retries
    (lock timeouts and deadlocks, then LockTimeout; an order number drawn twice is drawn again).
    Domain refusals (4xx) are stored on the claim for replays; anything else drops the claim."""
    claim_id = None
    if idempotency_key is not None:
        claim_id, stored = claim_idempotency_key(user=user, key=idempotency_key, fingerprint=fingerprint)
        if stored is not None:
            return PlacementResult(stored.response_status, stored.response_body, replayed=True)
    with settled_on_failure(claim_id):
        for attempt in range(3):
            try:
                order, body = _create_order(
                    user=user,
                    lines=lines,
                    shipping_address=shipping_address,
                    reference=reference,
                    claim_id=claim_id,
                    render=render,
                )
                break
            except IntegrityError as exc:  # an order number drawn twice: draw again
                if attempt == 2 or "orders_order_number_key" not in str(exc):
                    raise
    return PlacementResult(201, body, replayed=False, placed=order)
