from django.conf import settings
from django.db import models
from django.db.models import Q

from inventory.models import Product, StockLevel, Warehouse


class Order(models.Model):
    class Status(models.TextChoices):
        RESERVED = "reserved"
        PAID = "paid"
        PARTIALLY_FULFILLED = "partially_fulfilled", "Partly shipped"
        FULFILLED = "fulfilled"
        PARTIALLY_RETURNED = "partially_returned", "Partly returned"
        RETURNED = "returned"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    number = models.CharField(max_length=20, unique=True)
    # db_index=False here and on the FKs below: a composite index leading with the column covers it,
    # and every order pays for each index it writes.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", db_index=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RESERVED)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    paid_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    # The sum of every return's refund (orders.shipping): returned units at their line's unit price.
    refunded_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0, db_default=0)
    reference = models.CharField(max_length=64, blank=True, help_text="The client's own reference.")
    shipping_name = models.CharField(max_length=100)
    shipping_line1 = models.CharField(max_length=200)
    shipping_line2 = models.CharField(max_length=200, blank=True)
    shipping_city = models.CharField(max_length=100)
    shipping_postal_code = models.CharField(max_length=20)
    shipping_country = models.CharField(max_length=2)
    version = models.PositiveIntegerField(default=1)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    returned_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["user", "-id"], name="order_user_id"),
            models.Index(fields=["status", "-id"], name="order_status_id"),
            # The expiry sweep reads only unpaid reservations, oldest deadline first.
            models.Index(fields=["expires_at", "id"], condition=Q(status="reserved"), name="order_reserved_expiry_id"),
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def shipping_address(self) -> dict:
        return {
            "name": self.shipping_name,
            "line1": self.shipping_line1,
            "line2": self.shipping_line2,
            "city": self.shipping_city,
            "postal_code": self.shipping_postal_code,
            "country": self.shipping_country,
        }


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="orderline_one_per_product"),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="orderline_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"


class Allocation(models.Model):
    """Which stock level a line's units come from; a line may split across warehouses."""

    line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="allocations")
    stock_level = models.ForeignKey(StockLevel, on_delete=models.PROTECT, related_name="allocations")
    quantity = models.PositiveIntegerField()
    # Units of this allocation that left in shipped shipments: still reserved = quantity - shipped.
    # db_default, so the SQL placement path inserts allocations without naming it.
    shipped = models.PositiveIntegerField(default=0, db_default=0)
    # Units sold beyond the shelf still waiting for stock (counted in the level's backordered, not
    # its reserved): reserved = quantity - shipped - backordered. Filled on arrival, oldest first.
    backordered = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["stock_level", "id"], condition=Q(backordered__gt=0), name="allocation_waiting")
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(backordered__gte=0, backordered__lte=models.F("quantity") - models.F("shipped")),
                name="allocation_backordered_within",
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="allocation_quantity_positive"),
            models.CheckConstraint(
                condition=Q(shipped__gte=0, shipped__lte=models.F("quantity")), name="allocation_shipped_within"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} from level {self.stock_level_id}"


def shipment_reference(order_number: str, shipment_id: int) -> str:
    """How a shipment is named in the ledger, the admin and its messages: `SR-XXXX-XXXX/S12`."""
    return f"{order_number}/S{shipment_id}"


def return_reference(order_number: str, return_id: int) -> str:
    """How a return is named in the ledger, the admin and its messages: `SR-XXXX-XXXX/R3`."""
    return f"{order_number}/R{return_id}"


class Shipment(models.Model):
    """A parcel: quantities of an order's lines taken from one warehouse (orders.shipping).

    `pending` promises the units (they count against what is left to ship, DESIGN §3 invariant 6);
    shipping it consumes them from the allocations at that warehouse; a pending one can be
    cancelled. Every change locks the order row first, so one order's shipments never race."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SHIPPED = "shipped"
        CANCELLED = "cancelled"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="shipments")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    carrier = models.CharField(max_length=50, blank=True)
    tracking_number = models.CharField(max_length=100, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    shipped_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.order_id}/S{self.pk}"


class ShipmentLine(models.Model):
    shipment = models.ForeignKey(Shipment, on_delete=models.CASCADE, related_name="lines", db_index=False)
    line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="shipment_lines")
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["shipment", "line"], name="shipmentline_one_per_line"),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="shipmentline_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x line {self.line_id}"


class OrderReturn(models.Model):
    """Units that came back: each line's quantity restocked or written off in a chosen warehouse,
    and the refund they are worth (payment is simulated: the amount is recorded)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="returns")
    reason = models.CharField(max_length=200)
    refund_amount = models.DecimalField(max_digits=14, decimal_places=2)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.order_id}/R{self.pk}"


class ReturnLine(models.Model):
    class Disposition(models.TextChoices):
        RESTOCK = "restock", "back on sale"
        DAMAGED = "damaged", "written off"

    order_return = models.ForeignKey(OrderReturn, on_delete=models.CASCADE, related_name="lines", db_index=False)
    line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="return_lines")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    disposition = models.CharField(max_length=8, choices=Disposition.choices)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["order_return", "line"], name="returnline_return_line")]
        constraints = [models.CheckConstraint(condition=Q(quantity__gte=1), name="returnline_quantity_positive")]

    def __str__(self) -> str:
        return f"{self.quantity} x line {self.line_id} ({self.disposition})"


class IdempotencyKey(models.Model):
    """One client key per user: claimed (in flight, with a lease) and completed with the order.
    The one-round-trip placement claims it inside the order's transaction; the ORM path claims
    and commits it first. Domain 4xx results are stored and replayed too; 5xx never (no claim is
    left, so the client's retry runs again). Pruned after 24 h."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        COMPLETE = "complete"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    lease_expires_at = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    # Not indexed, so completing the key (which sets it) can be a heap-only update that touches
    # no index. Nothing looks keys up by order; deleting an order scans a day of keys at most.
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_one_per_user_key")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.key}"


# --- reports of the order jobs (orders.jobs) -----------------------------------------------------


class SalesReport(models.Model):
    """One day's sales as CSV for staff, the day taken in settings.TIME_ZONE. Regenerating a day
    replaces its row (the job is idempotent)."""

    day = models.DateField(unique=True)
    time_zone = models.CharField(max_length=64)
    orders = models.PositiveIntegerField(default=0)
    units = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    currency = models.CharField(max_length=3)
    csv = models.TextField()
    generated_at = models.DateTimeField()

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"Sales {self.day}"


class ReconciliationRun(models.Model):
    """One check of every invariant of DESIGN §3 in one REPEATABLE READ snapshot, with each breach
    and the row that shows it."""

    class Outcome(models.TextChoices):
        CLEAN = "clean"
        BREACHES = "breaches"

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    breach_count = models.PositiveIntegerField(default=0)
    # [{"invariant": 2, "check": "ledger", "row": {...}}, ...]
    breaches = models.JSONField(default=list, blank=True)
    levels_checked = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["outcome", "-id"], name="reconciliation_outcome_id")]

    def __str__(self) -> str:
        return f"Reconciliation #{self.pk} ({self.outcome})"


class BulkFulfilment(models.Model):
    """A staff request to fulfil many orders, and what became of each id (the job's report)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    order_ids = models.JSONField(default=list)
    fulfilled = models.JSONField(default=list, blank=True)
    locked = models.JSONField(default=list, blank=True, help_text="Held by another transaction; not taken.")
    not_paid = models.JSONField(default=list, blank=True, help_text="Not in `paid` when their turn came.")
    missing = models.JSONField(default=list, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Bulk fulfilment #{self.pk} ({self.state})"
