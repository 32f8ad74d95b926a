from decimal import Decimal

from django.conf import settings
from rest_framework import serializers

from inventory.models import CODE_VALIDATOR, MAX_STOCK_BUCKETS, SKU_VALIDATOR, BackorderPolicy, Product, StockLevel

MAX_QUANTITY = 1_000_000_000
BACKORDER_POLICY_HELP = (
    "deny: sold from stock only; backorder: beyond the shelf up to backorder_cap units per stock level, "
    "shipped when stock arrives; preorder: the same until preorder_until."
)
BACKORDER_CAP_HELP = "Units each stock level may sell beyond its shelf under a backorder or preorder policy."
STOCK_BUCKETS_HELP = (
    "Hot mode (a flash sale): stock buckets per stock level that orders take units from in parallel; "
    f"0 turns it off, at most {MAX_STOCK_BUCKETS}."
)


class ProductSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    available = serializers.IntegerField()
    active = serializers.BooleanField()
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField()
    backorder_policy = serializers.ChoiceField(choices=BackorderPolicy.choices, help_text=BACKORDER_POLICY_HELP)
    preorder_until = serializers.DateField(allow_null=True, help_text="Preorders are taken until this date (UTC).")
    max_per_order = serializers.IntegerField(allow_null=True, help_text="Most units in one order (null: no limit).")
    customer_limit = serializers.IntegerField(
        allow_null=True, help_text="Most units one customer may order over customer_limit_days (null: no limit)."
    )
    customer_limit_days = serializers.IntegerField()
    stock_buckets = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_STOCK_BUCKETS, help_text=f"Staff only. {STOCK_BUCKETS_HELP}"
    )


def product_payload(product: Product) -> dict:
    """The public shape of a product (also what the catalogue cache stores)."""
    return {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "price": str(product.price),
        "currency": settings.SHOP_CURRENCY,
        "available": max(int(getattr(product, "available", 0) or 0), 0),
        "active": product.active,
        "version": product.version,
        "updated_at": product.updated_at.isoformat().replace("+00:00", "Z"),
        "backorder_policy": product.backorder_policy,
        "preorder_until": product.preorder_until.isoformat() if product.preorder_until else None,
        "max_per_order": product.max_per_order,
        "customer_limit": product.customer_limit,
        "customer_limit_days": product.customer_limit_days,
    }


class CatalogueQuerySerializer(serializers.Serializer):
    search = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    active = serializers.ChoiceField(choices=["true", "false", "all"], required=False, default="true")
    updated_since = serializers.DateTimeField(required=False)


class ProductCreateSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0"))
    active = serializers.BooleanField(required=False, default=True)
    low_stock_threshold = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False, default=5)


class ProductUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0"), required=False)
    active = serializers.BooleanField(required=False)
    low_stock_threshold = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)
    stock_buckets = serializers.IntegerField(
        min_value=0, max_value=MAX_STOCK_BUCKETS, required=False, help_text=STOCK_BUCKETS_HELP
    )
    backorder_policy = serializers.ChoiceField(
        choices=BackorderPolicy.choices, required=False, help_text=BACKORDER_POLICY_HELP
    )
    backorder_cap = serializers.IntegerField(
        min_value=0, max_value=MAX_QUANTITY, required=False, help_text=f"{BACKORDER_CAP_HELP} Shown per stock level."
    )
    preorder_until = serializers.DateField(required=False, allow_null=True)
    max_per_order = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY, required=False, allow_null=True)
    customer_limit = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY, required=False, allow_null=True)
    customer_limit_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
        if not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


class StockLevelSerializer(serializers.ModelSerializer):
    """A level as staff see it. `available` counts the units its stock buckets hold (hot mode),
    which `reserved` counts too; `incoming` is what open purchase orders still expect. The level must
    carry both (selectors.with_stock_figures or attach_stock_figures)."""

    sku = serializers.CharField(source="product.sku")
    warehouse = serializers.CharField(source="warehouse.code")
    available = serializers.IntegerField(
        help_text="Units orders can still take: on_hand - reserved - safety_stock (at least 0), plus what hot mode's"
        " buckets hold."
    )
    incoming = serializers.IntegerField(help_text="Units open purchase orders still expect: not on hand yet.")
    backordered = serializers.IntegerField(help_text="Units sold beyond the shelf, waiting for stock to arrive.")
    backorder_cap = serializers.IntegerField(help_text=BACKORDER_CAP_HELP)
    safety_stock = serializers.IntegerField(help_text="Units held back from online sale; staff may still ship them.")
    reorder_point = serializers.IntegerField(
        allow_null=True, help_text="Below this projected stock the reorder job drafts a purchase order."
    )
    reorder_quantity = serializers.IntegerField(help_text="Units a drafted purchase order asks for (at least).")

    class Meta:
        model = StockLevel
        fields = [
            "sku", "warehouse", "on_hand", "reserved", "available", "incoming", "backordered", "backorder_cap",
            "safety_stock", "reorder_point", "reorder_quantity", "version",
        ]  # fmt: skip


class StockQuerySerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, required=False)
    warehouse = serializers.CharField(max_length=32, required=False)


class _SkuWarehouse(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    warehouse = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])


class LevelSettingsSerializer(_SkuWarehouse):
    safety_stock = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)
    backorder_cap = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)
    reorder_point = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False, allow_null=True)
    reorder_quantity = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY, required=False)

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
        if not set(attrs) - {"sku", "warehouse"}:
            raise serializers.ValidationError("Send at least one setting to change.")
        return attrs


class AdjustmentSerializer(_SkuWarehouse):
    delta = serializers.IntegerField(min_value=-MAX_QUANTITY, max_value=MAX_QUANTITY)
    reason = serializers.CharField(max_length=200)
    expected_version = serializers.IntegerField(min_value=1, required=False)

    def validate_delta(self, value):
        if value == 0:
            raise serializers.ValidationError("Must not be zero.")
        return value


class CountSerializer(_SkuWarehouse):
    on_hand = serializers.IntegerField(min_value=0, max_value=MAX_QUANTITY)
    expected_version = serializers.IntegerField(min_value=1)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class TransferSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, validators=[SKU_VALIDATOR])
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    def get_fields(self):
        fields = super().get_fields()
        # `from` is a Python keyword, so these two are declared here.
        fields["from"] = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])
        fields["to"] = serializers.CharField(max_length=32, validators=[CODE_VALIDATOR])
        return fields


class TransferResultSerializer(serializers.Serializer):
    def get_fields(self):
        return {"from": StockLevelSerializer(), "to": StockLevelSerializer()}


# --- webhook payloads (inventory.events builds them; these document them in the schema) --------------


class StockChangedDataSerializer(serializers.Serializer):
    level = StockLevelSerializer(help_text="The level as it stood when the event was emitted (after the change).")


class StockLowProductSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    on_hand = serializers.IntegerField(help_text="Over active warehouses.")
    available = serializers.IntegerField()
    incoming = serializers.IntegerField(help_text="Units open purchase orders still expect.")
    threshold = serializers.IntegerField(help_text="The low-stock threshold that available + incoming fell to.")


class StockLowDataSerializer(serializers.Serializer):
    product = StockLowProductSerializer()


class BackInStockProductSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    available = serializers.IntegerField()


class BackInStockDataSerializer(serializers.Serializer):
    product = BackInStockProductSerializer()
