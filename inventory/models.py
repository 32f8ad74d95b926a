from datetime import date

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

# What a SKU may be, written once: the model's validator, the product page's URL and the import's
# check of each CSV line all use it (64 characters at most, as the column).
SKU_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
SKU_VALIDATOR = RegexValidator(rf"^{SKU_PATTERN}$", "Letters, digits, '.', '_' and '-' only.")
CODE_VALIDATOR = RegexValidator(r"^[A-Z0-9][A-Z0-9_-]{0,31}$", "Upper-case letters, digits, '_' and '-' only.")


def is_sku(value: object) -> bool:
    """Whether `value` could be a product's SKU (text no product could have never reaches a query)."""
    return isinstance(value, str) and SKU_VALIDATOR.regex.fullmatch(value) is not None


MAX_STOCK_BUCKETS = 64


class BackorderPolicy(models.TextChoices):
    DENY = "deny", "Deny (sell from stock only)"
    BACKORDER = "backorder", "Backorder up to the cap"
    PREORDER = "preorder", "Preorder until a date, up to the cap"


def beyond_the_shelf(policy: str, preorder_until: date | None, today: date) -> str:
    """How a product sells beyond its shelf on `today`: "backorder", "preorder" or "" (it does not)."""
    if policy == BackorderPolicy.BACKORDER:
        return "backorder"
    if policy == BackorderPolicy.PREORDER and preorder_until is not None and today <= preorder_until:
        return "preorder"
    return ""


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True, validators=[SKU_VALIDATOR])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=5000)
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    active = models.BooleanField(default=True)
    low_stock_threshold = models.PositiveIntegerField(default=5)
    # Set when an alert went out for the current crossing; cleared once stock is back above.
    low_stock_alerted = models.BooleanField(default=False)
    # Hot mode (a flash sale): each stock level of the product splits its free units into this
    # many buckets (StockBucket) that orders take from without queueing on the level's row. 0: off.
    # Set through inventory.services.product_set_buckets only, which creates or removes the rows.
    stock_buckets = models.PositiveSmallIntegerField(
        default=0, db_default=0, help_text="Hot mode: stock buckets per level (0 turns it off)."
    )
    # Selling beyond the shelf (inventory.services.product_set_backorders applies it to each level).
    backorder_policy = models.CharField(
        max_length=10, choices=BackorderPolicy.choices, default=BackorderPolicy.DENY, db_default=BackorderPolicy.DENY
    )
    backorder_cap = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Units each stock level may sell beyond its shelf (backorder, preorder)."
    )
    preorder_until = models.DateField(
        null=True, blank=True, help_text="Preorder: taken until this date (the release date), then sold from stock."
    )
    # Limits against hoarding: per order, and per customer over a rolling period (None: no limit).
    max_per_order = models.PositiveIntegerField(null=True, blank=True, help_text="Most units of it in one order.")
    customer_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most units one customer may order over customer_limit_days."
    )
    customer_limit_days = models.PositiveSmallIntegerField(default=30, db_default=30)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(
                condition=Q(stock_buckets__lte=MAX_STOCK_BUCKETS), name="product_stock_buckets_bounded"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} · {self.name}"

    def takes_backorders(self, today: date) -> bool:
        """Whether an order may take it beyond the shelf on `today` (a UTC date), up to each level's
        cap. The placement in SQL asks the same (orders/placement/placement.sql)."""
        return beyond_the_shelf(self.backorder_policy, self.preorder_until, today) != ""


class Warehouse(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[CODE_VALIDATOR])
    name = models.CharField(max_length=100)
    priority = models.PositiveIntegerField(default=100, help_text="Orders draw from lower numbers first.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.code


class StockLevel(models.Model):
    """Units of one product in one warehouse. `available = max(on_hand - reserved - safety_stock, 0) + bucketed`.

    `reserved` counts the units allocated to live orders and, in hot mode, the free units its
    buckets hold for orders to take (StockBucket): cold writers see only `on_hand - reserved`, so
    none of them can spend a bucket's units. `bucketed` is not a column: annotate it
    (selectors.with_bucketed) where `available` is shown; it is 0 otherwise.

    The CHECKs are the last line of defence of invariant 1; services refuse first.
    `version` moves with `on_hand` only, so staff edits do not fight shoppers' reservations.
    """

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="stock_levels")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="stock_levels")
    on_hand = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    # Units sold beyond the shelf (backorders, preorders), waiting for stock: never in `reserved`.
    backordered = models.BigIntegerField(default=0, db_default=0)
    backorder_cap = models.BigIntegerField(default=0, db_default=0)
    # Held back from online sale: orders see on_hand - reserved - safety_stock; staff still ship them.
    safety_stock = models.BigIntegerField(default=0, db_default=0)
    # Below this projected stock (on_hand + incoming - reserved) the reorder job drafts a purchase order.
    reorder_point = models.BigIntegerField(null=True, blank=True)
    reorder_quantity = models.BigIntegerField(default=0, db_default=0)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id", "warehouse_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(backordered__gte=0, backordered__lte=F("backorder_cap")),
                name="stocklevel_backordered_within_cap",
            ),
            models.CheckConstraint(condition=Q(safety_stock__gte=0), name="stocklevel_safety_stock_not_negative"),
            models.CheckConstraint(
                condition=Q(reorder_point__gte=0) | Q(reorder_point__isnull=True),
                name="stocklevel_reorder_point_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(reorder_quantity__gte=0), name="stocklevel_reorder_quantity_not_negative"
            ),
            models.UniqueConstraint(fields=["product", "warehouse"], name="stocklevel_one_per_product_warehouse"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="stocklevel_reserved_not_negative"),
            models.CheckConstraint(condition=Q(on_hand__gte=F("reserved")), name="stocklevel_on_hand_covers_reserved"),
        ]
        indexes = [models.Index(fields=["warehouse", "product"], name="stocklevel_warehouse_product")]

    def __str__(self) -> str:
        return f"{self.product_id}@{self.warehouse_id}"

    @property
    def available(self) -> int:
        """Units orders may take: the safety stock stays on the shelf."""
        return max(self.on_hand - self.reserved - self.safety_stock, 0) + (getattr(self, "bucketed", 0) or 0)

    @property
    def unreserved(self) -> int:
        """Units staff may move or ship beyond orders' (transfers, moved reservations): safety stock too."""
        return self.on_hand - self.reserved + (getattr(self, "bucketed", 0) or 0)


class StockBucket(models.Model):
    """Free units of a hot level, set apart so that orders take them without locking the level.

    A level has the product's `stock_buckets` of them, numbered by `slot` from 1: an order picks a
    slot at random and locks that one row with `FOR UPDATE SKIP LOCKED` (inventory_hot_take), one
    index probe whatever the number of buckets. The units are counted in the level's `reserved`
    until an order takes them, so the level's CHECKs still bound the sum. Written only by the SQL
    functions of inventory/migrations/sql/ (0008_stock_buckets.sql, 0009_bucket_slots.sql).
    """

    level = models.ForeignKey(StockLevel, on_delete=models.PROTECT, related_name="buckets", db_index=False)
    slot = models.PositiveSmallIntegerField()
    units = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(units__gte=0), name="stockbucket_units_not_negative"),
            # Also the index of every per-level read of buckets.
            models.UniqueConstraint(fields=["level", "slot"], name="stockbucket_level_slot"),
        ]

    def __str__(self) -> str:
        return f"bucket {self.pk} of {self.level_id}: {self.units}"


class StockMovement(models.Model):
    """Append-only ledger: one row per change of on_hand or reserved, written with the change.

    A trigger (migration 0002) refuses UPDATE and DELETE, so history cannot be rewritten.

    The table also has a `txid` column (xid8, migration 0012) that this model leaves out on
    purpose: the id of the transaction that wrote the row, filled by its database default
    `pg_current_xact_id()`, so no INSERT (Django's, inventory_ledger_write's, any SQL path's) names
    it. It is NULL on rows written before 0012. The movements feed (inventory.feeds) orders by
    (COALESCE(txid, 0), id) through the movement_txid_id index, so that a row is served once and
    never skipped, whenever its transaction commits. Read it with SQL, not through this model.
    """

    class Reason(models.TextChoices):
        RECEIPT = "receipt"
        ADJUSTMENT = "adjustment"
        COUNT = "count"
        TRANSFER = "transfer"
        IMPORT = "import"
        RESERVATION = "reservation"
        RELEASE = "release"
        FULFILMENT = "fulfilment"
        RETURN = "return"
        DAMAGED = "damaged"
        EXPIRY = "expiry"
        BUCKET = "bucket"  # free units moved between a hot level and its buckets
        BACKORDER = "backorder"  # backordered units of an order filled from arrived stock

    # No index of its own: movement_level_id (level, id) covers it, and every stock change writes here.
    level = models.ForeignKey(StockLevel, on_delete=models.PROTECT, related_name="movements", db_index=False)
    delta_on_hand = models.BigIntegerField(default=0)
    delta_reserved = models.BigIntegerField(default=0)
    # Units into (+) or out of (-) the level's hot buckets. The level's reserved moves by
    # delta_reserved + delta_bucketed: an order served by a bucket is reserved +n, bucketed -n.
    delta_bucketed = models.BigIntegerField(default=0, db_default=0)
    # Units sold beyond the shelf (+) or filled from arrived stock or released (-).
    delta_backordered = models.BigIntegerField(default=0, db_default=0)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    reference = models.CharField(max_length=64, blank=True)  # indexed in Meta: no LIKE index beside it
    note = models.CharField(max_length=200, blank=True)
    # PROTECT: the ledger is append-only, so an actor who changed stock cannot be deleted.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["level", "id"], name="movement_level_id"),
            # Looked up by equality only (an order's or an import's rows); db_index=True on a
            # CharField would add a varchar_pattern_ops twin that every stock change also writes.
            models.Index(fields=["reference"], name="movement_reference"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} {self.delta_on_hand:+}/{self.delta_reserved:+} on {self.level_id}"


class ImportJob(models.Model):
    """A CSV stock import (`sku,warehouse,on_hand[,name,price]`), run by the `import_stock` task.

    Progress (`rows_done`, `chunks_applied`) is committed in the same transaction as each chunk of
    stock changes, so a run resumed after a crash skips exactly the chunks already applied.
    `errors` keeps the first 1000 row errors ({line, message}); `rows_failed` counts them all.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting for the worker, being read, or waiting for a busy warehouse
        RUNNING = "running"  # holds its warehouses (ImportWarehouse.running) and applies chunks
        SUCCEEDED = "succeeded"
        PARTIAL = "partial"  # some rows failed, the others were applied
        FAILED = "failed"

    FINISHED = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED)

    file = models.FileField(upload_to="imports/", max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    warehouses = models.ManyToManyField(Warehouse, through="ImportWarehouse", related_name="+", blank=True)
    rows_total = models.PositiveIntegerField(default=0)
    rows_done = models.PositiveIntegerField(default=0)
    rows_ok = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    # Fixed when the file is staged, so a resumed run cuts exactly the same line ranges.
    chunk_rows = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_applied = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs of the task (a crash shows as a second).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    staged_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rows_done=F("rows_ok") + F("rows_failed")), name="importjob_rows_done_adds_up"
            ),
            models.CheckConstraint(condition=Q(rows_done__lte=F("rows_total")), name="importjob_rows_done_le_total"),
            models.CheckConstraint(
                condition=Q(chunks_applied__lte=F("chunks_total")), name="importjob_chunks_applied_le_total"
            ),
        ]
        indexes = [
            models.Index(fields=["status"], condition=Q(status__in=["queued", "running"]), name="importjob_unfinished")
        ]

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.original_name or self.file.name})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED


class ImportWarehouse(models.Model):
    """A warehouse an import writes to. `running` while the import holds it: the partial unique
    index lets one import at a time hold a warehouse, across all of its chunk transactions
    (a claimed row, not a session advisory lock: connections are pooled)."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="scopes")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="+")
    running = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "warehouse"], name="importwarehouse_once_per_job"),
            models.UniqueConstraint(
                fields=["warehouse"], condition=Q(running=True), name="import_one_running_per_warehouse"
            ),
        ]

    def __str__(self) -> str:
        return f"import {self.job_id} -> {self.warehouse_id}{' (running)' if self.running else ''}"


class PurchaseOrder(models.Model):
    """Stock a supplier is expected to deliver to one warehouse.

    Open until every line has arrived (then `received`) or staff cancel it. What its open lines
    still expect is the `incoming` of the matching stock levels (selectors.with_stock_figures).
    Written only by inventory.services (purchase_order_create, _receive, _cancel).
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"  # proposed by the reorder job: not incoming until staff confirm it
        OPEN = "open", "Open"
        RECEIVED = "received", "Received"
        CANCELLED = "cancelled", "Cancelled"

    supplier_reference = models.CharField(max_length=64, blank=True)
    warehouse = models.ForeignKey(Warehouse, on_delete=models.PROTECT, related_name="purchase_orders")
    expected_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "warehouse"], name="purchaseorder_status_wh")]

    def __str__(self) -> str:
        return self.reference

    @property
    def reference(self) -> str:
        """What its ledger rows reference."""
        return f"PO-{self.pk}"


class PurchaseOrderLine(models.Model):
    # Its index is the unique (purchase_order, product) one's.
    purchase_order = models.ForeignKey(PurchaseOrder, on_delete=models.CASCADE, related_name="lines", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")  # incoming: by product
    ordered = models.PositiveIntegerField()
    received = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(ordered__gte=1), name="purchaseorderline_ordered_positive"),
            models.UniqueConstraint(fields=["purchase_order", "product"], name="purchaseorderline_one_per_product"),
        ]

    def __str__(self) -> str:
        return f"{self.purchase_order_id}: {self.product_id} x {self.ordered}"

    @property
    def outstanding(self) -> int:
        return max(self.ordered - self.received, 0)


class PurchaseOrderReceipt(models.Model):
    """One delivery received against a purchase order, by its key: the same key twice adds once."""

    # Its index is the unique (purchase_order, key) one's.
    purchase_order = models.ForeignKey(PurchaseOrder, on_delete=models.CASCADE, related_name="receipts", db_index=False)
    key = models.CharField(max_length=64)
    # What the delivery received (sha256 of its lines): the same key with other lines is refused.
    fingerprint = models.CharField(max_length=64)
    units = models.PositiveBigIntegerField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["purchase_order", "key"], name="purchaseorderreceipt_one_per_key")
        ]

    def __str__(self) -> str:
        return f"{self.purchase_order_id}/{self.key}"


class BackInStockSubscription(models.Model):
    """A shopper waiting for a product to come back: one email when its availability goes from zero
    to positive, then the subscription ends (`notified_at`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "product"], condition=Q(notified_at__isnull=True), name="backinstock_one_waiting"
            )
        ]
        indexes = [
            models.Index(fields=["product", "id"], condition=Q(notified_at__isnull=True), name="backinstock_waiting")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} waits for {self.product_id}"


class BulkStockRequest(models.Model):
    """One POST /stock/levels/bulk by its Idempotency-Key (inventory.bulk): the key row is inserted
    first in the request's own transaction, and its answer (a 200, or a 409 refusal) is stored on
    it before commit, so the changes and the stored answer commit together or not at all. A twin
    with the same key waits on the unique index until the first commits, then replays its answer.
    Pruned after IDEMPOTENCY_KEEP_HOURS by the inventory housekeeping job (prune_import_files)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    # sha256 of method, path and the canonical JSON body: the same key with another body is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="bulkstockrequest_one_per_key")]
        indexes = [models.Index(fields=["created_at"], name="bulkstockrequest_created")]

    def __str__(self) -> str:
        return f"bulk {self.key} by {self.user_id}: {self.status_code}"


class LedgerFollower(models.Model):
    """Where a job that follows the stock ledger has read up to (inventory.feeds' position: the
    (txid, id) of the last row it handled). One row per follower, locked by the follower's run."""

    name = models.CharField(max_length=64, unique=True)
    txid = models.PositiveBigIntegerField(default=0)
    last_id = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at ({self.txid}, {self.last_id})"
