"""Back-in-stock subscriptions: a shopper waits for a sold-out product and gets one email when it
can be bought again. The services (writes) and selectors (reads) of the feature.

A subscription can only be made while the product's availability is zero, and the sweep
(`back_in_stock_notify`, every 30 seconds) looks at current availability, whatever changed it: a
receipt, an adjustment, a count, a cancelled or expired order, a return, an import. So "from zero
to positive by any path" needs no hook in any of those writes, and they stay as short as they are.

Guarantees:
- At most one waiting subscription per shopper and product: the partial unique index
  `backinstock_one_waiting` decides, and subscribing inserts with ON CONFLICT DO NOTHING, so two
  requests at once make one row and both answer with it.
- Each subscription is emailed once: the sweep claims waiting rows with FOR UPDATE SKIP LOCKED,
  sets `notified_at` and writes their outbox rows in one transaction, so a second sweep (or two
  at once) finds nothing left to take. The email itself is delivered at least once, with a
  Message-ID that is the same at every delivery (inventory.emails, project.outbox). The same
  transaction emits a `product.back_in_stock` webhook event for each product whose subscriptions
  it took (inventory.events).
- Nothing here locks a stock level or a product: the sweep locks subscription rows only, and no
  other code locks them while holding other locks, so the system's lock order is untouched.
"""

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from inventory.emails import back_in_stock_enqueue
from inventory.errors import InStockNow, InvalidInput
from inventory.events import BACK_IN_STOCK, back_in_stock_emit
from inventory.models import BackInStockSubscription, Product, is_sku
from inventory.selectors import products_with_availability
from project.db.transactions import Retry, atomic_with_retry
from project.errors import NotFound
from project.values import is_whole_number
from project.webhooks.services import webhook_wanted

NOTIFY_LIMIT = 500
NOTIFY_MAX_LIMIT = 10_000

_TABLE = BackInStockSubscription._meta.db_table
# The conflict target names the partial unique index `backinstock_one_waiting` (its columns and
# predicate): a second waiting row for the same shopper and product is dropped, not an error.
_SUBSCRIBE_SQL = f"""
INSERT INTO {_TABLE} (user_id, product_id, created_at, notified_at)
VALUES (%s, %s, %s, NULL)
ON CONFLICT (user_id, product_id) WHERE notified_at IS NULL DO NOTHING
RETURNING id
"""  # noqa: S608 - the table name is the model's, the values are parameters


def _no_product(sku: str) -> NotFound:
    return NotFound(f"No product with SKU {str(sku)[:70]!r}.")


def _waiting() -> QuerySet[BackInStockSubscription]:
    return BackInStockSubscription.objects.filter(notified_at__isnull=True)


# --- services ------------------------------------------------------------------------------------


@atomic_with_retry
def back_in_stock_subscribe(*, user, sku: str) -> tuple[BackInStockSubscription, bool]:
    """Wait for a sold-out product: returns (the subscription, whether it is new).

    Idempotent: while the shopper is already waiting for it, that subscription is returned (even if
    the product came back since and the sweep has not emailed yet). Otherwise the product must be
    active (NotFound for an unknown or inactive SKU, as for every shopper read) and have nothing
    available right now (InStockNow, 409 `in_stock`: order it instead). Race-safe: concurrent
    calls make one row (INSERT ... ON CONFLICT DO NOTHING on the partial unique index). Locks
    nothing; one transaction.
    """
    if not is_sku(sku):
        raise _no_product(sku)
    product = products_with_availability().filter(sku=sku, active=True).first()
    if product is None:
        raise _no_product(sku)
    existing = _waiting().select_related("product").filter(user=user, product=product).first()
    if existing is not None:
        return existing, False
    if product.available > 0:
        raise InStockNow()
    with connection.cursor() as cursor:
        cursor.execute(_SUBSCRIBE_SQL, [user.pk, product.pk, timezone.now()])
        row = cursor.fetchone()
    if row is not None:
        return BackInStockSubscription.objects.select_related("product").get(pk=row[0]), True
    # Another request made it first (its commit ended our INSERT's wait): answer with its row. If
    # that row is gone already (emailed or cancelled in between), run the whole call again.
    existing = _waiting().select_related("product").filter(user=user, product=product).first()
    if existing is None:
        raise Retry()
    return existing, False


@atomic_with_retry
def back_in_stock_unsubscribe(*, user, sku: str) -> bool:
    """Stop waiting for a product; returns whether a waiting subscription was ended (deleted).

    Idempotent: not waiting is not an error. Works for an inactive product too (a shopper can
    always stop waiting); NotFound for an unknown SKU. A subscription already emailed is history
    and stays. One statement.
    """
    if not is_sku(sku):
        raise _no_product(sku)
    product_id = Product.objects.filter(sku=sku).values_list("pk", flat=True).first()
    if product_id is None:
        raise _no_product(sku)
    deleted, _ = _waiting().filter(user=user, product_id=product_id).delete()
    return deleted > 0


def back_in_stock_notify(*, limit: int = NOTIFY_LIMIT) -> int:
    """The sweep: email every shopper waiting for a product that can be bought again; returns how
    many subscriptions it ended.

    One transaction: claims at most `limit` waiting subscriptions (oldest first) of active products
    whose availability is above zero now, for shoppers whose account is active, with FOR UPDATE
    SKIP LOCKED on the subscription rows only (a second sweep at the same time takes others);
    sets their `notified_at` and queues one outbox email each (inventory.emails). Both commit
    together, so each subscription is emailed once; a subscription made again later waits anew.
    Reads availability without locking stock: a product sold out again before the email arrives
    still gets it (availability is advisory everywhere but in placement). What is left over the
    limit waits for the next run. InvalidInput for a bad limit.
    """
    if not is_whole_number(limit, minimum=1, maximum=NOTIFY_MAX_LIMIT):
        raise InvalidInput(fields={"limit": [f"A whole number from 1 to {NOTIFY_MAX_LIMIT}."]})
    with transaction.atomic():
        # First the products that came back, each one's availability summed once however many
        # shoppers wait for it; then their waiting rows, along the (product, id) partial index.
        back = list(
            products_with_availability()
            .filter(active=True, available__gt=0, pk__in=_waiting().values("product_id"))
            .values_list("pk", flat=True)
        )
        if not back:
            return 0
        claimed = list(
            _waiting()
            .select_for_update(of=("self",), skip_locked=True)
            .filter(product_id__in=back, user__is_active=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not claimed:
            return 0
        _waiting().filter(pk__in=claimed).update(notified_at=timezone.now())
        back_in_stock_enqueue(subscription_ids=claimed)
        if webhook_wanted(BACK_IN_STOCK):
            served = BackInStockSubscription.objects.filter(pk__in=claimed).values("product_id")
            back_in_stock_emit(products_with_availability().filter(pk__in=served).order_by("pk"))
    return len(claimed)


# --- selectors -----------------------------------------------------------------------------------


def back_in_stock_waiting(*, user) -> QuerySet[BackInStockSubscription]:
    """The shopper's waiting subscriptions, newest first, with their product (none for anonymous)."""
    if not getattr(user, "is_authenticated", False):
        return BackInStockSubscription.objects.none()
    return _waiting().filter(user=user).select_related("product").order_by("-id")


def is_waiting(*, user, sku: str) -> bool:
    """Whether this shopper waits for this product now (False for anonymous users and odd SKUs)."""
    if not getattr(user, "is_authenticated", False) or not is_sku(sku):
        return False
    return _waiting().filter(user=user, product__sku=sku).exists()
