"""The catalogue in the admin: products, created and edited through the services."""

from django.contrib import admin

from inventory import exports, selectors
from inventory.admin.forms import ProductAdminForm
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.models import Product, StockLevel
from project.http.admin_selection import ReadOnlyAdminMixin


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
        return (
            super().get_queryset(request).select_related("warehouse").order_by("warehouse__priority", "warehouse__code")
        )


@admin.register(Product)
class ProductAdmin(ServiceTransactionMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price", "active", "available", "version", "updated_at"]
    list_filter = ["active"]
    search_fields = ["sku", "name"]
    ordering = ["sku"]
    show_full_result_count = False
    actions = [export_products_csv]

    def get_queryset(self, request):
        return selectors.products_with_availability()

    @admin.display(description="Available")
    def available(self, product: Product) -> int:
        return product.available

    def get_fieldsets(self, request, obj=None):
        editable = ["name", "description", "price", "active", "low_stock_threshold"]
        if obj is None:
            return [(None, {"fields": ["sku", *editable]})]
        return [
            (None, {"fields": ["sku", *editable, "version"]}),
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
