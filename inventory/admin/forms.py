"""Admin forms of the inventory app: thin edges that parse input, call one service, show refusals.

Every write goes through `inventory.services`. A domain refusal (stale version, a change that
would break an invariant, not enough stock, bad input, a busy lock) becomes a form error on the
page, never a 500 and never a silent overwrite.
"""

from django import forms

from inventory import selectors, services
from inventory.errors import InsufficientStock, InvalidInput, VersionConflict
from inventory.models import MAX_STOCK_BUCKETS, Product, StockLevel, Warehouse
from project.errors import DomainError

MAX_QUANTITY = services.MAX_QUANTITY
LOST_VERSION = "This form lost the version it was loaded with; reload the page and try again."


def add_domain_error(form: forms.BaseForm, exc: DomainError, *, what: str, field_map: dict | None = None) -> None:
    """Show a service refusal on `form`: field errors where the service named a field we show."""
    field_map = field_map or {}
    if isinstance(exc, VersionConflict):
        current = exc.extra.get("current_version")
        now = f" (it is now at version {current})" if current is not None else ""
        form.add_error(None, f"This {what} was changed by someone else{now}. Reload the page and try again.")
    elif isinstance(exc, InsufficientStock) and "quantity" in form.fields:
        for item in exc.items:
            form.add_error("quantity", f"Only {item['available']} units of {item['sku']} are available.")
    elif isinstance(exc, InvalidInput) and exc.fields:
        for name, messages in exc.fields.items():
            field = field_map.get(name, name)
            if field in form.fields:
                form.add_error(field, messages)
            else:
                form.add_error(None, [f"{name}: {message}" for message in messages])
    else:
        form.add_error(None, exc.detail)


class ServiceModelForm(forms.ModelForm):
    """A model form whose save is a service call made once the fields are valid.

    The service runs at the end of validation (not in `save_model`) so that its refusal can
    still be shown on the form: the admin then only logs the change and redirects, and
    `save()` returns the object the service wrote.
    """

    what = "object"

    def full_clean(self):
        super().full_clean()
        if self.is_bound and not self._errors:
            try:
                self.apply()
            except DomainError as exc:
                add_domain_error(self, exc, what=self.what)

    def apply(self) -> None:
        raise NotImplementedError

    def save(self, commit=True):
        # The service already wrote the row; nothing may write it again from the form's values.
        if self.errors:
            raise ValueError("The form has errors; the service did not apply it.")
        self.save_m2m = lambda: None
        return self.instance


HOT_MODE_HELP = (
    "Hot mode, for a flash sale: each stock level's free units are split into this many buckets "
    f"that orders take from in parallel instead of queueing on the level's row (1 to {MAX_STOCK_BUCKETS}; "
    "the list's action sets 64, about as many as buyers at once). Switching moves no available unit. "
    "0 turns hot mode off."
)


# The product's backorder policy and limits (product_update applies the policy to its levels).
SELLING_FIELDS = ["backorder_policy", "backorder_cap", "preorder_until", "max_per_order", "customer_limit",
                  "customer_limit_days"]  # fmt: skip


class ProductAdminForm(ServiceModelForm):
    """Create through `product_create`; edit through `product_update`, compare-and-set on `version`.

    `version` is the product's version when the page was loaded, carried in a hidden field: a
    save made after someone else's is refused, never applied over it.

    `stock_buckets` (hot mode, change form only) is switched by `product_update` in the same
    compare-and-set; the list's actions (`product_set_buckets`) move the version too.
    """

    what = "product"
    version = forms.IntegerField(
        widget=forms.HiddenInput, required=False, min_value=1, error_messages={"invalid": LOST_VERSION}
    )
    # Not required: a post without it (an older page, a script) leaves hot mode as it is.
    stock_buckets = forms.IntegerField(
        label="Hot mode: stock buckets",
        min_value=0,
        max_value=MAX_STOCK_BUCKETS,
        required=False,
        help_text=HOT_MODE_HELP,
    )
    actor = None  # the admin's user, set by ProductAdmin.get_form: the ledger's actor of a switch

    class Meta:
        model = Product
        fields = [
            "sku", "name", "description", "price", "active", "low_stock_threshold", "stock_buckets",
            *SELLING_FIELDS,
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in SELLING_FIELDS:  # a post without them (the add form, an older page) leaves them be
            if name in self.fields:
                self.fields[name].required = False

    def clean_stock_buckets(self) -> int | None:
        buckets = self.cleaned_data.get("stock_buckets")
        if buckets is None and "stock_buckets" in self.data:  # sent blank; not sent: left as it is
            raise forms.ValidationError("Enter a number of buckets; 0 turns hot mode off.")
        return buckets

    def apply(self) -> None:
        data = self.cleaned_data
        if self.instance.pk is None:
            self.instance = services.product_create(
                sku=data["sku"],
                name=data["name"],
                price=data["price"],
                description=data.get("description", ""),
                active=data.get("active", True),
                low_stock_threshold=data.get("low_stock_threshold", 5),
            )
            return
        if data.get("version") is None:
            self.add_error(None, LOST_VERSION)
            return
        # changed_data compares with the row as it is now, so a field someone else changed since
        # the page was loaded counts as changed too, and the stale version refuses it (a switch of
        # hot mode moves the version as well).
        changes = {
            name: data[name]
            for name in self.changed_data
            if name in services.PRODUCT_EDITABLE and (name not in SELLING_FIELDS or name in self.data)
        }
        if "stock_buckets" in self.changed_data and data.get("stock_buckets") is not None:
            changes["stock_buckets"] = data["stock_buckets"]
        if changes:
            self.instance = services.product_update(
                sku=self.instance.sku, expected_version=data["version"], changes=changes, actor=self.actor
            )


class WarehouseAdminForm(ServiceModelForm):
    """Create through `warehouse_create`; edit name and priority through `warehouse_update` (the
    code is never changed, `active` only by the list's actions)."""

    what = "warehouse"

    class Meta:
        model = Warehouse
        fields = ["code", "name", "priority"]

    def apply(self) -> None:
        data = self.cleaned_data
        if self.instance.pk is None:
            self.instance = services.warehouse_create(code=data["code"], name=data["name"], priority=data["priority"])
        else:
            self.instance = services.warehouse_update(
                code=self.instance.code, name=data["name"], priority=data["priority"]
            )


# --- stock operations -------------------------------------------------------------------------


def _quantity_field(label: str, *, minimum: int, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(label=label, min_value=minimum, max_value=MAX_QUANTITY, help_text=help_text)


def _version_field() -> forms.IntegerField:
    return forms.IntegerField(
        widget=forms.HiddenInput,
        min_value=1,
        error_messages={"required": LOST_VERSION, "invalid": LOST_VERSION, "min_value": LOST_VERSION},
    )


class StockOperationForm(forms.Form):
    """One staff operation on a stock level: `submit()` calls its service and says what it did.

    `submit()` returns the success message, or None after adding the refusal to the form.
    """

    title = ""
    submit_label = "Save"
    field_map: dict[str, str] = {}

    def __init__(self, *args, level: StockLevel | None = None, **kwargs):
        self.level = level
        super().__init__(*args, **kwargs)

    def submit(self, *, actor) -> str | None:
        try:
            return self.perform(actor=actor)
        except DomainError as exc:
            add_domain_error(self, exc, what="stock level", field_map=self.field_map)
            return None

    def perform(self, *, actor) -> str:
        raise NotImplementedError

    @property
    def result_level(self) -> StockLevel:
        """The level the operation changed (set by `perform`), to send the user back to."""
        return self._result_level

    def _where(self) -> dict:
        return {"sku": self.level.product.sku, "warehouse_code": self.level.warehouse.code}


def _figures(level: StockLevel) -> str:
    # A level a service returns carries no `bucketed`: read what its stock buckets hold (hot
    # mode), counted in `reserved` and available to orders.
    if not hasattr(level, "bucketed"):
        selectors.attach_stock_figures([level])
    return f"on hand {level.on_hand}, reserved {level.reserved}, available {level.available} (version {level.version})"


class ReceiptForm(StockOperationForm):
    title = "Receive stock"
    submit_label = "Receive"

    quantity = _quantity_field("Quantity received", minimum=1)
    reference = forms.CharField(max_length=64, required=False, help_text="Delivery note or purchase order.")
    note = forms.CharField(max_length=200, required=False)

    def perform(self, *, actor) -> str:
        data = self.cleaned_data
        level = services.stock_receive(
            **self._where(), quantity=data["quantity"], reference=data["reference"], note=data["note"], actor=actor
        )
        self._result_level = level
        return (
            f"Received {data['quantity']} units of {level.product.sku} into {level.warehouse.code}: {_figures(level)}."
        )


class NewReceiptForm(ReceiptForm):
    """A receipt into any warehouse, also where the product has no stock level yet."""

    field_map = {"warehouse": "warehouse", "sku": "sku"}

    sku = forms.CharField(label="SKU", max_length=64)
    warehouse = forms.ModelChoiceField(queryset=Warehouse.objects.order_by("priority", "code"), to_field_name="code")
    field_order = ["sku", "warehouse", "quantity", "reference", "note"]

    def _where(self) -> dict:
        return {"sku": self.cleaned_data["sku"].strip(), "warehouse_code": self.cleaned_data["warehouse"].code}


class AdjustmentForm(StockOperationForm):
    title = "Adjust stock"
    submit_label = "Adjust"

    delta = forms.IntegerField(
        label="Change in on hand",
        min_value=-MAX_QUANTITY,
        max_value=MAX_QUANTITY,
        help_text="Units to add (positive) or remove (negative), e.g. -2 for two damaged units.",
    )
    note = forms.CharField(max_length=200, help_text="Why: damaged, found, correction…")
    expected_version = _version_field()

    def clean_delta(self) -> int:
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError("An adjustment must change on hand: enter a non-zero number.")
        return delta

    def perform(self, *, actor) -> str:
        data = self.cleaned_data
        level = services.stock_adjust(
            **self._where(),
            delta=data["delta"],
            note=data["note"],
            expected_version=data["expected_version"],
            actor=actor,
        )
        self._result_level = level
        return f"Adjusted {level.product.sku} in {level.warehouse.code} by {data['delta']:+}: {_figures(level)}."


class CountForm(StockOperationForm):
    title = "Count stock"
    submit_label = "Record count"
    field_map = {"on_hand": "on_hand"}

    on_hand = _quantity_field(
        "Counted on hand", minimum=0, help_text="Every unit on the shelf, including those reserved for orders."
    )
    note = forms.CharField(max_length=200, required=False)
    expected_version = _version_field()

    def perform(self, *, actor) -> str:
        data = self.cleaned_data
        level = services.stock_count(
            **self._where(),
            on_hand=data["on_hand"],
            expected_version=data["expected_version"],
            note=data["note"],
            actor=actor,
        )
        self._result_level = level
        return f"Counted {level.product.sku} in {level.warehouse.code}: {_figures(level)}."


class TransferForm(StockOperationForm):
    title = "Transfer stock"
    submit_label = "Transfer"
    field_map = {"to": "to_warehouse", "from": "to_warehouse"}

    to_warehouse = forms.ModelChoiceField(queryset=Warehouse.objects.none(), to_field_name="code", label="To warehouse")
    quantity = _quantity_field("Quantity", minimum=1, help_text="Moved from the available units of this level.")
    note = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, level: StockLevel, **kwargs):
        super().__init__(*args, level=level, **kwargs)
        self.fields["to_warehouse"].queryset = Warehouse.objects.exclude(pk=level.warehouse_id).order_by(
            "priority", "code"
        )

    def perform(self, *, actor) -> str:
        data = self.cleaned_data
        source, target = services.stock_transfer(
            sku=self.level.product.sku,
            from_code=self.level.warehouse.code,
            to_code=data["to_warehouse"].code,
            quantity=data["quantity"],
            note=data["note"],
            actor=actor,
        )
        self._result_level = source
        return (
            f"Transferred {data['quantity']} units of {source.product.sku} from {source.warehouse.code} "
            f"({_figures(source)}) to {target.warehouse.code} ({_figures(target)})."
        )


class SettingsForm(StockOperationForm):
    title = "Stock level settings"
    submit_label = "Save settings"
    field_map = {name: name for name in ("safety_stock", "backorder_cap", "reorder_point", "reorder_quantity")}

    safety_stock = _quantity_field(
        "Safety stock", minimum=0, help_text="Units held back from online sale; staff may still ship them."
    )
    backorder_cap = _quantity_field(
        "Backorder cap",
        minimum=0,
        help_text="Units this level may sell beyond its shelf while the product takes backorders or preorders "
        "(the product's policy sets it on every level; here it can differ for this one).",
    )
    reorder_point = forms.IntegerField(
        label="Reorder point",
        min_value=0,
        max_value=MAX_QUANTITY,
        required=False,
        help_text="Below this projected stock (on hand + incoming - reserved - backordered) the reorder job "
        "drafts a purchase order. Empty: off.",
    )
    reorder_quantity = _quantity_field("Reorder quantity", minimum=0, help_text="Units a draft asks for, at least.")

    def __init__(self, *args, level: StockLevel, **kwargs):
        kwargs["initial"] = {
            **kwargs.get("initial", {}),
            **{name: getattr(level, name) for name in self.field_map},
        }
        super().__init__(*args, level=level, **kwargs)

    def perform(self, *, actor) -> str:
        changes = {name: self.cleaned_data[name] for name in self.field_map}
        level = services.stock_level_configure(**self._where(), changes=changes, actor=actor)
        self._result_level = level
        point = "off" if level.reorder_point is None else level.reorder_point
        return (
            f"Saved the settings of {level.product.sku} in {level.warehouse.code}: safety stock "
            f"{level.safety_stock}, backorder cap {level.backorder_cap}, reorder point {point}; {_figures(level)}."
        )


STOCK_OPERATIONS: dict[str, type[StockOperationForm]] = {
    "receive": ReceiptForm,
    "adjust": AdjustmentForm,
    "count": CountForm,
    "transfer": TransferForm,
    "settings": SettingsForm,
}
