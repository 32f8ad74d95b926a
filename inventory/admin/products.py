"""The catalogue in the admin: products, created and edited through the services."""

from django.contrib import admin, messages

from inventory import exports, selectors, services
from inventory.admin.forms import SELLING_FIELDS, ProductAdminForm
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.models import Product, StockLevel
from project.errors import DomainError
from project.http.admin_selection import ReadOnlyAdminMixin, selected_ids

# What "Turn hot mode on" sets (the change form sets any number): about as many buckets as buyers
# ordering the product at once, the README's benchmark shows why.
HOT_MODE_BUCKETS = 64
HOT_SWITCH_MAX_PRODUCTS = 100  # products one action switches: one short transaction each


@admin.action(description="Export selected products to CSV (streamed, formulas made inert)")
def export_products_csv(modeladmin, request, queryset):
    return exports.products_csv(queryset)


class StockLevelInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The product's stock per warehouse, read-only; the level's page holds the operations."""

    model = StockLevel
    fields = ["warehouse", "on_hand", "reserved", "available", "version", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "Stock per warehouse"

    def get_queryset(self, request):
        # `available` counts what a hot level's buckets hold (counted in `reserved`).
        return selectors.with_bucketed(
            super().get_queryset(request).select_related("warehouse").order_by("warehouse__priority", "warehouse__code")
        )


@admin.register(Product)
class ProductAdmin(ServiceTransactionMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price", "active", "available", "hot", "version", "updated_at"]
    list_filter = ["active"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]
    show_full_result_count = False
    actions = [export_products_csv, "turn_hot_mode_on", "turn_hot_mode_off"]

    def get_queryset(self, request):
        return selectors.products_with_availability()

    @admin.display(description="Available")
    def available(self, product: Product) -> int:
        return product.available

    @admin.display(description="Hot", ordering="stock_buckets")
    def hot(self, product: Product) -> int | str:
        return product.stock_buckets or "—"

    def get_form(self, request, obj=None, change=False, **kwargs):
        # The form switches hot mode through product_update, whose ledger rows name the actor.
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def get_fieldsets(self, request, obj=None):
        editable = ["name", "description", "price", "active", "low_stock_threshold"]
        if obj is None:
            return [(None, {"fields": ["sku", *editable]})]
        return [
            (None, {"fields": ["sku", *editable, "stock_buckets", "version"]}),
            (
                "Selling beyond the shelf and limits",
                {
                    "fields": SELLING_FIELDS,
                    "description": "Backorders and preorders sell up to the cap per stock level beyond what is on "
                    "the shelf; those orders ship once stock arrives. Limits refuse a line above them.",
                },
            ),
            ("Record", {"fields": ["current_version", "low_stock_alerted", "created_at", "updated_at"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # The SKU names the product everywhere (API, orders, imports): it is never renamed.
        return ["sku", "current_version", "low_stock_alerted", "created_at", "updated_at"]

    @admin.display(description="Version")
    def current_version(self, product: Product) -> int:
        return product.version

    def get_inlines(self, request, obj):
        return [StockLevelInline] if obj is not None else []

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form saved through product_create / product_update."""

    def has_delete_permission(self, request, obj=None):
        # Products are retired by making them inactive; their ledger and orders keep them.
        return False

    # --- hot mode ---

    def _switch_hot_mode(self, request, queryset, *, buckets: int, done: str) -> None:
        """product_set_buckets per selected product (one transaction each), reported per product."""
        ids = selected_ids(self, request, queryset, limit=HOT_SWITCH_MAX_PRODUCTS, noun="products")
        if ids is None:
            return
        switched = []
        for sku in Product.objects.filter(pk__in=ids).order_by("sku").values_list("sku", flat=True):
            try:
                services.product_set_buckets(sku=sku, buckets=buckets, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"{sku}: hot mode was not switched: {exc.detail}", messages.ERROR)
            else:
                switched.append(sku)
        if switched:
            self.message_user(request, f"{done}: {', '.join(switched)}.", messages.SUCCESS)

    @admin.action(description=f"Turn hot mode on ({HOT_MODE_BUCKETS} buckets)", permissions=["change"])
    def turn_hot_mode_on(self, request, queryset):
        self._switch_hot_mode(
            request, queryset, buckets=HOT_MODE_BUCKETS, done=f"Hot mode on ({HOT_MODE_BUCKETS} buckets)"
        )

    @admin.action(description="Turn hot mode off", permissions=["change"])
    def turn_hot_mode_off(self, request, queryset):
        self._switch_hot_mode(request, queryset, buckets=0, done="Hot mode off")
