"""Back-in-stock subscriptions in the admin, read-only: who waits for what, and who was emailed.

Shoppers make and end them (product page, API); the sweep ends them with one email each
(inventory.back_in_stock). Staff only look.
"""

from django.contrib import admin

from inventory.models import BackInStockSubscription
from project.http.admin_selection import ReadOnlyAdminMixin


class WaitingFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("waiting", "Waiting"), ("notified", "Emailed")]

    def queryset(self, request, queryset):
        if self.value() == "waiting":
            return queryset.filter(notified_at__isnull=True)
        if self.value() == "notified":
            return queryset.filter(notified_at__isnull=False)
        return queryset


@admin.register(BackInStockSubscription)
class BackInStockSubscriptionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "sku", "product_name", "user_email", "created_at", "notified_at"]
    list_select_related = ["product", "user"]
    list_filter = [WaitingFilter]
    search_fields = ["product__sku", "user__email"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = ["sku", "product_name", "user_email", "created_at", "notified_at"]
    readonly_fields = fields

    @admin.display(description="SKU", ordering="product__sku")
    def sku(self, subscription: BackInStockSubscription) -> str:
        return subscription.product.sku

    @admin.display(description="Product", ordering="product__name")
    def product_name(self, subscription: BackInStockSubscription) -> str:
        return subscription.product.name

    @admin.display(description="Shopper", ordering="user__email")
    def user_email(self, subscription: BackInStockSubscription) -> str:
        return subscription.user.email
