"""The webhook events of stock: `stock.changed`, `stock.low` and `product.back_in_stock`.

`stock.changed` is coalesced after commit, from the ledger: every stock change writes ledger rows
in its own transaction, and `stock_changed_emit` (a periodic job, every few seconds) follows the
ledger through the movements feed (inventory.feeds: every committed row exactly once, in a stable
order), emitting one event per level touched since its last run, with the level as it stands
now. So a sale writes no shared row to coalesce (a level would become a hot row), a rolled-back
change emits nothing, and a committed one is never missed: the follower's position and the
events it emits commit together. The follower starts at the present on its first run, and skips
to the present while no endpoint wants the type, so an endpoint registered later is not flooded
with history.

`stock.low` is emitted by the low-stock alert job (inventory.services.low_stock_alerts_queue) for
each product that crosses its threshold, and `product.back_in_stock` by the back-in-stock sweep
(inventory.back_in_stock) for each product shoppers were waiting for, both in their own
transactions.
"""

from uuid import uuid4

from django.db import transaction

from inventory.feeds import MAX_LIMIT, FeedPosition, movements_page, present_position
from inventory.models import LedgerFollower, Product, StockLevel
from inventory.selectors import with_stock_figures
from inventory.serializers import StockLevelSerializer
from project.db.transactions import require_transaction, try_advisory_xact_lock
from project.webhooks.services import webhook_emit_many, webhook_wanted

STOCK_CHANGED = "stock.changed"
STOCK_LOW = "stock.low"
BACK_IN_STOCK = "product.back_in_stock"
# The webhook event types of stock; registered with the platform in inventory.apps.
EVENT_TYPES = {
    STOCK_CHANGED: "A stock level changed (on hand, reserved, backordered): one event per level per few seconds,"
    " with the level as it then stands.",
    STOCK_LOW: "A product's available plus incoming units fell to its low-stock threshold.",
    BACK_IN_STOCK: "A product shoppers were waiting for can be bought again.",
}

FOLLOWER = "webhooks:stock.changed"
FOLLOWER_LOCK = "inventory:stock_changed_emit"
PAGE_ROWS = MAX_LIMIT  # ledger rows read per page
PAGES_PER_RUN = 50  # a run reads at most this many pages, each in its own transaction


def _move_to(follower: LedgerFollower, position: FeedPosition) -> None:
    """Keep the follower's new position (never behind the old one); no write if it did not move."""
    position = max(position, (follower.txid, follower.last_id))
    if (follower.txid, follower.last_id) != position:
        follower.txid, follower.last_id = position
        follower.save(update_fields=["txid", "last_id", "updated_at"])


def _stock_changed_page() -> tuple[int, bool]:
    """One page of the ledger, in one transaction: (events emitted, whether more rows may wait)."""
    with transaction.atomic():
        if not try_advisory_xact_lock(FOLLOWER_LOCK):
            return 0, False  # another run is at it
        follower, created = LedgerFollower.objects.select_for_update().get_or_create(name=FOLLOWER)
        if created or not webhook_wanted(STOCK_CHANGED):
            _move_to(follower, present_position())
            return 0, False
        rows, position = movements_page(after=(follower.txid, follower.last_id), limit=PAGE_ROWS)
        if not rows:
            return 0, False
        last_row_of_level = {row.level_id: row.id for row in rows}
        levels = with_stock_figures(
            StockLevel.objects.filter(pk__in=last_row_of_level).select_related("product", "warehouse")
        ).order_by("pk")
        emitted = webhook_emit_many(
            type=STOCK_CHANGED,
            events=[
                (
                    f"{STOCK_CHANGED}:{level.pk}:{last_row_of_level[level.pk]}",
                    {"level": StockLevelSerializer(level).data},
                    f"level:{level.pk}",
                )
                for level in levels
            ],
        )
        _move_to(follower, position)
        return emitted, len(rows) == PAGE_ROWS


def stock_changed_emit() -> int:
    """The periodic job: emit `stock.changed` for every level the ledger shows changed since the
    last run; returns the number of events. Singleton (an advisory lock per page)."""
    total = 0
    for _ in range(PAGES_PER_RUN):
        emitted, more = _stock_changed_page()
        total += emitted
        if not more:
            break
    return total


def _product_body(product: Product, **figures) -> dict:
    return {"product": {"sku": product.sku, "name": product.name, **figures}}


def stock_low_emit(products) -> None:
    """`stock.low` for these products (annotated with on_hand, available and incoming), in the
    caller's transaction (the low-stock alert job's)."""
    require_transaction("stock_low_emit")
    webhook_emit_many(
        type=STOCK_LOW,
        events=[
            (
                f"{STOCK_LOW}:{p.pk}:{uuid4().hex}",
                _product_body(
                    p,
                    on_hand=int(p.on_hand),
                    available=max(int(p.available), 0),
                    incoming=int(p.incoming),
                    threshold=p.low_stock_threshold,
                ),
                f"product:{p.pk}",
            )
            for p in products
        ],
    )


def back_in_stock_emit(products) -> None:
    """`product.back_in_stock` for these products (annotated with available), in the caller's
    transaction (the back-in-stock sweep's)."""
    require_transaction("back_in_stock_emit")
    webhook_emit_many(
        type=BACK_IN_STOCK,
        events=[
            (
                f"{BACK_IN_STOCK}:{p.pk}:{uuid4().hex}",
                _product_body(p, available=max(int(p.available), 0)),
                f"product:{p.pk}",
            )
            for p in products
        ],
    )
