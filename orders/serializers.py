import hashlib
import json

from django.conf import settings
from rest_framework import serializers

from inventory.models import SKU_VALIDATOR
from orders.models import Order


class LineRequestSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1)

    def validate_quantity(self, value):
        if value > settings.ORDER_MAX_QUANTITY:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.ORDER_MAX_QUANTITY}."
            )
        return value


class ShippingAddressSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100)
    postal_code = serializers.CharField(max_length=20)
    country = serializers.RegexField(
        r"^[A-Z]{2}$", max_length=2, error_messages={"invalid": "An ISO 3166-1 alpha-2 code, like FR or US."}
    )


class OrderRequestSerializer(serializers.Serializer):
    lines = LineRequestSerializer(many=True, allow_empty=False)
    shipping_address = ShippingAddressSerializer()
    reference = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validate_lines(self, lines):
        if len(lines) > settings.ORDER_MAX_LINES:
            raise serializers.ValidationError(f"An order has at most {settings.ORDER_MAX_LINES} lines.")
        skus = [line["sku"] for line in lines]
        if len(set(skus)) != len(skus):
            raise serializers.ValidationError("Each SKU may appear on one line only.")
        return lines


class AllocationOutSerializer(serializers.Serializer):
    warehouse = serializers.CharField(source="stock_level.warehouse.code")
    quantity = serializers.IntegerField()


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


class OrderQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    updated_since = serializers.DateTimeField(required=False)
    user = serializers.EmailField(required=False, help_text="Staff only: orders of this customer.")


def request_fingerprint(method: str, path: str, body) -> str:
    """method + path + canonical JSON body: key order and white space do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def _decimal(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def _datetime(value) -> str | None:
    # The same text DRF's DateTimeField gives in UTC.
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def order_payload(order: Order) -> dict:
    """The API's order, built by hand: the hot path renders it while stock rows are locked, and
    this costs a fraction of the nested serializers. OrderSerializer documents the same shape
    (tests keep the two identical)."""
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
                    {"warehouse": allocation.stock_level.warehouse.code, "quantity": allocation.quantity}
                    for allocation in line.allocations.all()
                ],
            }
            for line in order.lines.all()
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
