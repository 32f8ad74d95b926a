"""Order transitions as the admin offers them: the table of moves, the change page's form, and the
words staff read when a move is refused; and the forms that ship and take back an order by line.

The lifecycle itself lives in `orders.services`; `from_statuses` here only decides which buttons
an order's page shows. The service re-checks everything under the order's row lock, so a button
shown from a stale page is refused there, never applied over someone else's change. The ship and
return forms carry the order's version the same way, and their per-line fields check only the
shape of the input: how many units are left to ship or may come back is the service's to say,
under the lock.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django import forms

from inventory.errors import InsufficientStock
from inventory.models import Warehouse
from inventory.services import MAX_QUANTITY
from orders import services
from orders.models import Order, OrderReturn, ReturnLine, Shipment, return_reference, shipment_reference
from orders.selectors import LineProgress
from project.errors import DomainError, PreconditionFailed

Status = Order.Status
LOST_VERSION = "This page lost the order's version; reload it and try again."


@dataclass(frozen=True)
class OrderTransition:
    name: str
    label: str  # the button and the action: "Pay"
    done: str  # what happened to the order: "paid"
    from_statuses: frozenset[str]
    run: Callable[..., Order]  # run(order_id=, actor=, expected_version=) -> the moved order


def _pay(*, order_id: int, actor, expected_version: int | None) -> Order:
    # Payment is simulated and records no actor; the admin's LogEntry says who pressed the button.
    return services.order_pay(order_id=order_id, expected_version=expected_version)


def _fulfil(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_fulfil(order_id=order_id, actor=actor, expected_version=expected_version)


def _cancel(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_cancel(order_id=order_id, actor=actor, expected_version=expected_version)


def _return(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_return(order_id=order_id, actor=actor, expected_version=expected_version)


ORDER_TRANSITIONS: dict[str, OrderTransition] = {
    t.name: t
    for t in [
        OrderTransition("pay", "Pay", "paid", frozenset({Status.RESERVED}), _pay),
        OrderTransition("fulfil", "Fulfil", "fulfilled", frozenset({Status.PAID, Status.PARTIALLY_FULFILLED}), _fulfil),
        OrderTransition("cancel", "Cancel", "cancelled", frozenset({Status.RESERVED, Status.PAID}), _cancel),
        OrderTransition(
            "return", "Return", "returned", frozenset({Status.FULFILLED, Status.PARTIALLY_RETURNED}), _return
        ),
    ]
}


def transitions_offered(order: Order, *, now: datetime) -> list[OrderTransition]:
    """The moves worth offering for `order` as the page shows it (the service still has the last word).

    Paying is not offered once the reservation's time has run out, even before the sweep expires it.
    """
    offered = [t for t in ORDER_TRANSITIONS.values() if order.status in t.from_statuses]
    if order.expires_at <= now:
        offered = [t for t in offered if t.name != "pay"]
    return offered


def refusal_reason(exc: DomainError) -> str:
    """The service's reason, with the fields or SKUs it names (its bare detail can be "Invalid input.")."""
    if isinstance(exc, InsufficientStock) and exc.items:
        short = "; ".join(
            f"{item['sku']} needs {item['requested']}, {item['available']} available" for item in exc.items
        )
        return f"{exc.detail.rstrip('.')}: {short}."
    if exc.fields:
        return " ".join(f"{name}: {' '.join(str(m) for m in messages)}" for name, messages in exc.fields.items())
    return exc.detail


def refused(what: str, done: str, exc: DomainError) -> str:
    """One refusal, named with what it was about ("ORD-1", "ORD-1/S3") and what did not happen."""
    if isinstance(exc, PreconditionFailed):
        current = exc.extra.get("current_version")
        now = f" (it is now at version {current})" if current is not None else ""
        return (
            f"{what} was not {done}: it was changed by someone else since this page was loaded{now}. "
            "Nothing was done; check the order as it is now and try again."
        )
    return f"{what} was not {done}: {refusal_reason(exc)}"


def refusal_message(number: str, transition: OrderTransition, exc: DomainError) -> str:
    """One refused move, named with its order and the service's reason."""
    return refused(number, transition.done, exc)


def _version_field() -> forms.IntegerField:
    return forms.IntegerField(
        widget=forms.HiddenInput,
        min_value=1,
        error_messages={"required": LOST_VERSION, "invalid": LOST_VERSION, "min_value": LOST_VERSION},
    )


class OrderTransitionForm(forms.Form):
    """The buttons on an order's page: which move, and the version the page showed.

    `expected_version` goes to the service, which refuses the move (PreconditionFailed) when the
    order changed since the page was loaded, instead of acting on what the user no longer sees.
    """

    transition = forms.ChoiceField(choices=[(t.name, t.label) for t in ORDER_TRANSITIONS.values()])
    expected_version = _version_field()

    def chosen(self) -> OrderTransition:
        return ORDER_TRANSITIONS[self.cleaned_data["transition"]]


# --- shipping and returns by line --------------------------------------------------------------------

SHIPPABLE = frozenset(services.SHIPPABLE)
RETURNABLE = frozenset(services.RETURNABLE)


def active_warehouses() -> list[tuple[str, str]]:
    """(code, label) of the warehouses that may ship or take units in: one query for the whole form."""
    warehouses = Warehouse.objects.filter(active=True).order_by("priority", "code")
    return [(w.code, f"{w.code} ({w.name})") for w in warehouses]


def _units(items) -> str:
    """ "2 x MUG, 1 x TEA" from (quantity, sku) pairs."""
    return ", ".join(f"{quantity} x {sku}" for quantity, sku in items)


def _where_shipped(line: LineProgress) -> str:
    return ", ".join(f"{w.warehouse_code}: {w.shipped}" for w in line.warehouses if w.shipped) or "-"


def _where_left(line: LineProgress) -> str:
    return ", ".join(f"{w.warehouse_code}: {w.left}" for w in line.warehouses) or "-"


class OrderLinesForm(forms.Form):
    """A form with fields per order line, shown as a table (admin/orders/order/line_form.html):
    `columns` head it, `rows()` gives each line's figures and its fields. `expected_version` is the
    order's version when the form was loaded; the service refuses (PreconditionFailed) once the
    order has changed, so a stale form never acts on figures the user no longer sees."""

    title = ""
    submit_label = "Save"
    done = ""  # what did not happen, for refusals: "shipped"
    columns: list[str] = []  # the table's headers: the line's figures, then its fields
    nothing_text = ""  # when no line has anything for this form
    line_fields: list[str] = []

    expected_version = _version_field()

    def __init__(self, data=None, *, order: Order, progress: dict[int, LineProgress], warehouses, **kwargs):
        super().__init__(data, **kwargs)
        self.order = order
        self.progress = progress
        self.warehouses = warehouses
        self.lines = [line for line in progress.values() if self.offers(line)]
        for line in self.lines:
            self.add_line_fields(line)

    def offers(self, line: LineProgress) -> bool:
        raise NotImplementedError

    def add_line_fields(self, line: LineProgress) -> None:
        raise NotImplementedError

    def cells(self, line: LineProgress) -> list:
        raise NotImplementedError

    @staticmethod
    def name(line_id: int, field: str) -> str:
        return f"line_{line_id}_{field}"

    def rows(self) -> list[tuple[list, list[forms.BoundField]]]:
        return [(self.cells(line), [self[self.name(line.line_id, f)] for f in self.line_fields]) for line in self.lines]

    def main_fields(self) -> list[forms.BoundField]:
        """The visible fields that are not a line's (shown above the lines' table)."""
        return [field for field in self.visible_fields() if not field.name.startswith("line_")]

    def quantities(self) -> list[tuple[LineProgress, int]]:
        """(line, quantity) of the lines given more than 0 units, in line order."""
        chosen = [(line, self.cleaned_data.get(self.name(line.line_id, "quantity")) or 0) for line in self.lines]
        return [(line, quantity) for line, quantity in chosen if quantity > 0]

    def clean(self):
        cleaned = super().clean()
        fields_valid = all(self.name(line.line_id, "quantity") in cleaned for line in self.lines)
        if fields_valid and not self.quantities():
            raise forms.ValidationError("Enter at least one unit: every quantity is 0.")
        return cleaned

    def _quantity_field(self, initial: int) -> forms.IntegerField:
        return forms.IntegerField(
            min_value=0,
            max_value=MAX_QUANTITY,
            initial=initial,
            label="Quantity",
            widget=forms.NumberInput(attrs={"style": "width: 6em"}),
        )

    def submit(self, *, actor) -> str:
        """Call the service(s); the message for staff. A refusal raises the service's DomainError."""
        raise NotImplementedError


class ShipmentForm(OrderLinesForm):
    """A shipment from one warehouse: a quantity per line (0 leaves the line out).

    Each line's quantity starts at what is left to ship at the chosen warehouse. Units beyond that
    (allocated elsewhere) need `move_allocation`: the service then moves the reservation here first.
    "Ship now" creates and ships the shipment in one transaction, so a refused shipping leaves no
    pending shipment behind; otherwise the shipment stays pending (its units promised) until it is
    shipped or cancelled from the order's page.
    """

    title = "Ship"
    submit_label = "Create shipment"
    done = "shipped"
    columns = [
        "SKU",
        "Product",
        "Ordered",
        "Shipped",
        "In pending shipments",
        "Left to ship",
        "Left by warehouse",
        "Quantity in this shipment",
    ]
    nothing_text = "Every unit of this order is shipped or in a pending shipment."
    line_fields = ["quantity"]

    warehouse = forms.ChoiceField(label="From warehouse")
    carrier = forms.CharField(max_length=50, required=False)
    tracking_number = forms.CharField(max_length=100, required=False)
    move_allocation = forms.BooleanField(
        required=False,
        label="Take units allocated to other warehouses",
        help_text="Moves the reservation of units this warehouse lacks from the line's other warehouses "
        "(this warehouse must have them available).",
    )
    ship_now = forms.BooleanField(
        required=False,
        initial=True,
        label="Ship now",
        help_text="Create the shipment and ship it at once (stock leaves the shelves). "
        "Untick to leave it pending, to be shipped or cancelled from the order's page.",
    )

    def __init__(self, data=None, *, warehouse: str | None = None, **kwargs):
        super().__init__(data, **kwargs)
        codes = [code for code, _ in self.warehouses]
        self.fields["warehouse"].choices = self.warehouses
        self.chosen = warehouse if warehouse in codes else self._default_warehouse(codes)
        self.fields["warehouse"].initial = self.chosen
        for line in self.lines:
            self.fields[self.name(line.line_id, "quantity")].initial = self._left_at(line, self.chosen)

    def _default_warehouse(self, codes: list[str]) -> str | None:
        """The first active warehouse (by priority) with units left to ship."""
        return next(
            (code for code in codes if any(self._left_at(line, code) for line in self.lines)),
            codes[0] if codes else None,
        )

    @staticmethod
    def _left_at(line: LineProgress, code: str | None) -> int:
        return sum(w.left for w in line.warehouses if w.warehouse_code == code)

    def offers(self, line: LineProgress) -> bool:
        return line.left > 0

    def add_line_fields(self, line: LineProgress) -> None:
        self.fields[self.name(line.line_id, "quantity")] = self._quantity_field(0)

    def cells(self, line: LineProgress) -> list:
        return [line.sku, line.name, line.ordered, line.shipped, line.pending, line.left, _where_left(line)]

    def submit(self, *, actor) -> str:
        data = self.cleaned_data
        chosen = self.quantities()

        shipment = services.shipment_create(
            order_id=self.order.pk,
            warehouse=data["warehouse"],
            lines=[services.ShipmentLineRequest(line.line_id, quantity) for line, quantity in chosen],
            carrier=data["carrier"].strip(),
            tracking_number=data["tracking_number"].strip(),
            move_allocation=data["move_allocation"],
            ship=data["ship_now"],
            actor=actor,
            expected_version=data["expected_version"],
        )
        units = _units((quantity, line.sku) for line, quantity in chosen)
        what = shipment_reference(self.order.number, shipment.pk)
        if shipment.status == Shipment.Status.SHIPPED:
            return f"{what}: shipped {units} from {data['warehouse']}."
        return f"{what}: {units} from {data['warehouse']} waiting to be shipped (pending)."


class ReturnForm(OrderLinesForm):
    """Units that came back: per line a quantity (0 leaves it out), the warehouse that takes them
    in (first offered: the one the line shipped the most from) and whether they go back on sale or
    are written off as damaged. The refund is the units at their line's price."""

    title = "Record a return"
    submit_label = "Record return"
    done = "returned"
    columns = [
        "SKU",
        "Product",
        "Shipped (by warehouse)",
        "Returned",
        "Returnable",
        "Quantity back",
        "Into warehouse",
        "Disposition",
    ]
    nothing_text = "Every unit shipped has come back already."
    line_fields = ["quantity", "warehouse", "disposition"]

    reason = forms.CharField(max_length=200, help_text="Why the units came back (the customer's words).")

    def offers(self, line: LineProgress) -> bool:
        return line.returnable > 0

    def add_line_fields(self, line: LineProgress) -> None:
        shipped_from = max(line.warehouses, key=lambda w: w.shipped).warehouse_code
        self.fields[self.name(line.line_id, "quantity")] = self._quantity_field(0)
        self.fields[self.name(line.line_id, "warehouse")] = forms.ChoiceField(
            choices=self.warehouses, initial=shipped_from, label="Into warehouse"
        )
        self.fields[self.name(line.line_id, "disposition")] = forms.ChoiceField(
            choices=[
                (ReturnLine.Disposition.RESTOCK, "Back on sale"),
                (ReturnLine.Disposition.DAMAGED, "Written off as damaged"),
            ],
            initial=ReturnLine.Disposition.RESTOCK,
            label="Disposition",
        )

    def cells(self, line: LineProgress) -> list:
        return [line.sku, line.name, f"{line.shipped} ({_where_shipped(line)})", line.returned, line.returnable]

    def submit(self, *, actor) -> str:
        data = self.cleaned_data
        chosen = [
            (
                line,
                quantity,
                data[self.name(line.line_id, "warehouse")],
                data[self.name(line.line_id, "disposition")],
            )
            for line, quantity in self.quantities()
        ]
        record: OrderReturn = services.return_create(
            order_id=self.order.pk,
            lines=[services.ReturnLineRequest(line.line_id, n, code, kind) for line, n, code, kind in chosen],
            reason=data["reason"],
            actor=actor,
            expected_version=data["expected_version"],
        )
        dispositions = dict(ReturnLine.Disposition.choices)
        units = ", ".join(f"{n} x {line.sku} into {code}, {dispositions[kind]}" for line, n, code, kind in chosen)
        refund = f"{record.refund_amount} {self.order.currency}"
        return f"{return_reference(self.order.number, record.pk)}: took back {units}; refund {refund}."


class ShipmentActionForm(forms.Form):
    """A pending shipment's buttons on the order's page: its version when the page was loaded
    (refused once it changed), and for shipping, the tracking number (blank keeps the one it has)."""

    expected_version = _version_field()
    tracking_number = forms.CharField(max_length=100, required=False)
