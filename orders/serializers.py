import re
from collections.abc import Iterable

from django.conf import settings
from rest_framework import serializers

from inventory.models import CODE_VALIDATOR, SKU_VALIDATOR
from inventory.serializers import MAX_QUANTITY
from orders.models import Allocation, Order, OrderLine, OrderReturn, ReturnLine, Shipment, ShipmentLine
from project.api.bounded_lists import BoundedListSerializer


def order_max_lines() -> int:
    return settings.ORDER_MAX_LINES


class OrderLinesSerializer(BoundedListSerializer):
    """The lines of an order request: counted against ORDER_MAX_LINES before any line is validated,
    so a body of a million lines costs one length check and one message, not a million errors."""

    default_error_messages = {"too_long": "An order has at most {max_length} lines."}


class LineRequestSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1)

    class Meta:
        list_serializer_class = OrderLinesSerializer

    def validate_quantity(self, value):
        if value > settings.ORDER_MAX_QUANTITY:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.ORDER_MAX_QUANTITY}."
            )
        return value


COUNTRY_CODE = r"^[A-Z]{2}$"


class ShippingAddressSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100)
    postal_code = serializers.CharField(max_length=20)
    country = serializers.RegexField(
        COUNTRY_CODE, max_length=2, error_messages={"invalid": "An ISO 3166-1 alpha-2 code, like FR or US."}
    )


class OrderRequestSerializer(serializers.Serializer):
    lines = LineRequestSerializer(many=True, allow_empty=False, max_length=order_max_lines)
    shipping_address = ShippingAddressSerializer()
    reference = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validate_lines(self, lines):
        skus = [line["sku"] for line in lines]
        if len(set(skus)) != len(skus):
            raise serializers.ValidationError("Each SKU may appear on one line only.")
        return lines


# The fast path of order_request_data: what a well-formed body holds, taken from the serializers
# above, so the two cannot drift apart.
_COUNTRY = re.compile(COUNTRY_CODE)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ADDRESS_TEXT = tuple(
    (name, field.max_length, field.required)
    for name, field in ShippingAddressSerializer().fields.items()
    if name != "country"
)
_REFERENCE_MAX_LENGTH = OrderRequestSerializer().fields["reference"].max_length


def _plain_text(value, max_length: int, *, required: bool) -> bool:
    """A str that OrderRequestSerializer's CharField takes unchanged: no surrounding whitespace
    to trim, not too long, not blank where required, no NUL or surrogate characters."""
    return (
        type(value) is str
        and len(value) <= max_length
        and (bool(value) or not required)
        and value == value.strip()
        and "\x00" not in value
        and not _SURROGATE.search(value)
    )


def _well_formed_order_request(data) -> dict | None:
    """OrderRequestSerializer's validated data for a body it would take exactly as it is, or None
    for anything else (which the serializer then judges, with its own error messages). Checking
    the common case by hand saves the serializer's cost on every order."""
    if type(data) is not dict:
        return None
    lines, address, reference = data.get("lines"), data.get("shipping_address"), data.get("reference", "")
    if type(lines) is not list or not 0 < len(lines) <= settings.ORDER_MAX_LINES or type(address) is not dict:
        return None
    if not _plain_text(reference, _REFERENCE_MAX_LENGTH, required=False):
        return None
    parsed = []
    for line in lines:
        if type(line) is not dict:
            return None
        sku, quantity = line.get("sku"), line.get("quantity")
        if type(sku) is not str or not SKU_VALIDATOR.regex.fullmatch(sku):
            return None
        if type(quantity) is not int or not 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
            return None
        parsed.append({"sku": sku, "quantity": quantity})
    if len({line["sku"] for line in parsed}) != len(parsed):
        return None
    shipping = {}
    for name, max_length, required in _ADDRESS_TEXT:
        value = address.get(name, None if required else "")
        if not _plain_text(value, max_length, required=required):
            return None
        shipping[name] = value
    country = address.get("country")
    if type(country) is not str or not _COUNTRY.fullmatch(country):
        return None
    shipping["country"] = country
    return {"lines": parsed, "shipping_address": shipping, "reference": reference}


def order_request_data(data) -> dict:
    """The validated body of POST /orders; raises ValidationError (400) as OrderRequestSerializer does."""
    validated = _well_formed_order_request(data)
    if validated is None:
        params = OrderRequestSerializer(data=data)
        params.is_valid(raise_exception=True)
        validated = params.validated_data
    return validated


class AllocationOutSerializer(serializers.Serializer):
    warehouse = serializers.CharField(source="stock_level.warehouse.code")
    quantity = serializers.IntegerField()
    backordered = serializers.IntegerField(help_text="Of `quantity`, units waiting for stock to arrive.")


class LineOutSerializer(serializers.Serializer):
    sku = serializers.CharField(source="product.sku")
    name = serializers.CharField(source="product.name")
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2)
    allocations = AllocationOutSerializer(many=True)


class ShippingOutSerializer(serializers.Serializer):
    name = serializers.CharField()
    line1 = serializers.CharField()
    line2 = serializers.CharField()
    city = serializers.CharField()
    postal_code = serializers.CharField()
    country = serializers.CharField()


class OrderSerializer(serializers.ModelSerializer):
    lines = LineOutSerializer(many=True)
    shipping_address = ShippingOutSerializer()
    customer = serializers.EmailField(source="user.email")

    class Meta:
        model = Order
        fields = [
            "number", "status", "customer", "reference", "lines", "total", "currency", "paid_amount",
            "shipping_address", "version", "expires_at", "created_at", "updated_at",
            "paid_at", "fulfilled_at", "returned_at", "cancelled_at", "expired_at",
        ]  # fmt: skip


# The keys of the order body, in its order: the SQL placement's jsonb body is put back in this
# order (orders.placement.body), and order_payload builds the same keys (a test holds every
# producer of the body to OrderSerializer's output).
ORDER_FIELDS = tuple(OrderSerializer.Meta.fields)
LINE_FIELDS = tuple(LineOutSerializer().fields)


class OrderQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    updated_since = serializers.DateTimeField(required=False)
    user = serializers.EmailField(required=False, help_text="Staff only: orders of this customer.")


def _decimal(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def _datetime(value) -> str | None:
    # The same text DRF's DateTimeField gives in UTC.
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def order_payload(order: Order, lines: Iterable[tuple[OrderLine, Iterable[Allocation]]] | None = None) -> dict:
    """The API's order body, the one producer of it in Python (the API's responses, the ORM
    placement path and the idempotency key's stored response). Built by hand: the placement
    renders it while stock rows are locked, and this costs a fraction of the nested serializers.
    OrderSerializer defines the shape (the schema's, ORDER_FIELDS); orders_place_order
    (orders/placement/placement.sql) builds the same in SQL. tests/orders/placement/test_body.py
    holds both to the serializer's output for orders of every shape.

    `lines`: the order's lines, each with its allocations (line.product and
    allocation.stock_level.warehouse loaded), when the caller holds them (the placement that has
    just written them); by default they are read through order.lines and line.allocations
    (prefetch those for many orders: orders.selectors).
    """
    if lines is None:
        lines = ((line, line.allocations.all()) for line in order.lines.all())
    return {
        "number": order.number,
        "status": order.status,
        "customer": order.user.email,
        "reference": order.reference,
        "lines": [
            {
                "sku": line.product.sku,
                "name": line.product.name,
                "quantity": line.quantity,
                "unit_price": _decimal(line.unit_price),
                "allocations": [
                    {
                        "warehouse": allocation.stock_level.warehouse.code,
                        "quantity": allocation.quantity,
                        "backordered": allocation.backordered,
                    }
                    for allocation in allocations
                ],
            }
            for line, allocations in lines
        ],
        "total": _decimal(order.total),
        "currency": order.currency,
        "paid_amount": _decimal(order.paid_amount),
        "shipping_address": order.shipping_address,
        "version": order.version,
        "expires_at": _datetime(order.expires_at),
        "created_at": _datetime(order.created_at),
        "updated_at": _datetime(order.updated_at),
        "paid_at": _datetime(order.paid_at),
        "fulfilled_at": _datetime(order.fulfilled_at),
        "returned_at": _datetime(order.returned_at),
        "cancelled_at": _datetime(order.cancelled_at),
        "expired_at": _datetime(order.expired_at),
    }


# --- shipments and returns by line (orders.services: shipment_*, return_create) -------------------
#
# Requests name order lines by SKU (a line is unique per product within an order); the API turns
# each SKU into its line. Lists are counted against their limit before any item is validated.


class ShipmentLinesSerializer(BoundedListSerializer):
    default_error_messages = {"too_long": "A shipment has at most {max_length} lines."}


class ShipmentLineRequestSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        list_serializer_class = ShipmentLinesSerializer


class ShipmentCreateSerializer(serializers.Serializer):
    warehouse = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])
    lines = ShipmentLineRequestSerializer(many=True, allow_empty=False, max_length=order_max_lines)
    carrier = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    tracking_number = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    move_allocation = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Take units reserved in the order's other warehouses when this one has too few.",
    )

    def validate_lines(self, lines):
        skus = [line["sku"] for line in lines]
        if len(set(skus)) != len(skus):
            raise serializers.ValidationError("Each SKU may appear on one line only.")
        return lines


class ShipmentShipSerializer(serializers.Serializer):
    """Optional last changes to the parcel as it leaves; a field left out stays as it is."""

    carrier = serializers.CharField(max_length=50, required=False, allow_blank=True)
    tracking_number = serializers.CharField(max_length=100, required=False, allow_blank=True)


def return_max_lines() -> int:
    # A line may come back in parts (some restocked, some damaged, into different warehouses).
    return 2 * settings.ORDER_MAX_LINES


class ReturnLinesSerializer(BoundedListSerializer):
    default_error_messages = {"too_long": "A return has at most {max_length} lines."}


class ReturnLineRequestSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    warehouse = serializers.CharField(
        max_length=32, validators=[CODE_VALIDATOR], help_text="The warehouse that takes the units in."
    )
    disposition = serializers.ChoiceField(
        choices=ReturnLine.Disposition.choices, help_text="`restock`: back on sale; `damaged`: written off."
    )

    class Meta:
        list_serializer_class = ReturnLinesSerializer


class ReturnCreateSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200)
    lines = ReturnLineRequestSerializer(many=True, allow_empty=False, max_length=return_max_lines)


class ShipmentLineOutSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="line.product.sku")

    class Meta:
        model = ShipmentLine
        fields = ["sku", "quantity"]


class ShipmentSerializer(serializers.ModelSerializer):
    warehouse = serializers.CharField(source="warehouse.code")
    lines = ShipmentLineOutSerializer(many=True)

    class Meta:
        model = Shipment
        fields = [
            "id", "status", "warehouse", "carrier", "tracking_number", "version",
            "created_at", "shipped_at", "cancelled_at", "lines",
        ]  # fmt: skip


class ReturnLineOutSerializer(serializers.ModelSerializer):
    sku = serializers.CharField(source="line.product.sku")
    warehouse = serializers.CharField(source="warehouse.code")

    class Meta:
        model = ReturnLine
        fields = ["sku", "quantity", "warehouse", "disposition"]


class OrderReturnSerializer(serializers.ModelSerializer):
    lines = ReturnLineOutSerializer(many=True)

    class Meta:
        model = OrderReturn
        fields = ["id", "reason", "refund_amount", "created_at", "lines"]


def shipment_payload(shipment: Shipment) -> dict:
    """A shipment's API body (its warehouse and lines' products loaded: orders.selectors.order_shipments)."""
    return ShipmentSerializer(shipment).data


def return_payload(record: OrderReturn) -> dict:
    """A return's API body (its lines' products and warehouses loaded: orders.selectors.order_returns)."""
    return OrderReturnSerializer(record).data


class WarehouseProgressSerializer(serializers.Serializer):
    warehouse = serializers.CharField(source="warehouse_code")
    allocated = serializers.IntegerField(help_text="Units of the line reserved in this warehouse.")
    shipped = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Promised to pending shipments from this warehouse.")
    left = serializers.IntegerField(help_text="Neither shipped nor promised.")


class LineProgressSerializer(serializers.Serializer):
    sku = serializers.CharField()
    ordered = serializers.IntegerField()
    shipped = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Promised to pending shipments.")
    left = serializers.IntegerField(help_text="Neither shipped nor promised: what a new shipment may take.")
    returned = serializers.IntegerField()
    returnable = serializers.IntegerField(help_text="Shipped and not returned: what a new return may take.")
    warehouses = WarehouseProgressSerializer(many=True)


# --- webhook payloads (orders/events.sql builds them; these document them in the schema) ---------------


class OrderWebhookLineSerializer(serializers.Serializer):
    sku = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=12, decimal_places=2)


class OrderWebhookSerializer(serializers.Serializer):
    """The order in an `order.*` webhook event: part of the API's order body (same names and
    formats), as the change left it. GET /api/v1/orders/{number} has the rest."""

    number = serializers.CharField()
    status = serializers.ChoiceField(choices=Order.Status.choices, help_text="The order's status after the event.")
    customer = serializers.EmailField()
    reference = serializers.CharField(allow_blank=True)
    lines = OrderWebhookLineSerializer(many=True)
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()
    paid_amount = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    version = serializers.IntegerField(help_text="The order's version after the event: events of one order rise.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class OrderEventDataSerializer(serializers.Serializer):
    order = OrderWebhookSerializer()
