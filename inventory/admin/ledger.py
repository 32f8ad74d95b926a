"""The stock ledger in the admin, read-only."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from inventory.models import StockMovement
from project.http.admin_selection import ReadOnlyAdminMixin


@admin.register(StockMovement)
class StockMovementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The ledger, read-only: the database refuses UPDATE and DELETE of its rows anyway."""

    list_display = [
        "id",
        "created_at",
        "sku",
        "warehouse",
        "reason",
        "delta_on_hand",
        "delta_reserved",
        "delta_bucketed",
        "reference",
        "actor",
    ]
    list_select_related = ["level__product", "level__warehouse", "actor"]
    list_filter = ["reason", "level__warehouse"]
    search_fields = ["reference", "level__product__sku"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "level_link",
        "sku",
        "warehouse",
        "reason",
        "delta_on_hand",
        "delta_reserved",
        "delta_bucketed",
        "reference",
        "note",
        "actor",
        "created_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("level__product", "level__warehouse", "actor")

    @admin.display(description="SKU", ordering="level__product__sku")
    def sku(self, movement: StockMovement) -> str:
        return movement.level.product.sku

    @admin.display(description="Warehouse", ordering="level__warehouse__code")
    def warehouse(self, movement: StockMovement) -> str:
        return movement.level.warehouse.code

    @admin.display(description="Stock level")
    def level_link(self, movement: StockMovement) -> str:
        url = reverse(f"{self.admin_site.name}:inventory_stocklevel_change", args=[movement.level_id])
        return format_html('<a href="{}">{} @ {}</a>', url, movement.level.product.sku, movement.level.warehouse.code)
