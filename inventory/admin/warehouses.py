"""Warehouses in the admin: created and edited through the services, (de)activated by actions."""

from django.contrib import admin, messages

from inventory import services
from inventory.admin.forms import WarehouseAdminForm
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.models import Warehouse
from project.errors import DomainError


@admin.register(Warehouse)
class WarehouseAdmin(ServiceTransactionMixin, admin.ModelAdmin):
    form = WarehouseAdminForm
    list_display = ["code", "name", "priority", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["code", "name"]
    ordering = ["priority", "code"]
    actions = ["activate_warehouses", "deactivate_warehouses"]

    def get_fields(self, request, obj=None):
        return ["code", "name", "priority"] if obj is None else ["code", "name", "priority", "active", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # `active` changes only through the actions: deactivation is refused while units are reserved.
        return [] if obj is None else ["code", "active", "created_at"]

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form saved through warehouse_create / warehouse_update."""

    def has_delete_permission(self, request, obj=None):
        return False

    def _each_warehouse(self, request, queryset, *, service, done: str) -> None:
        for code in queryset.order_by("code").values_list("code", flat=True):
            try:
                service(code=code)
            except DomainError as exc:  # WarehouseBusy above all: units still reserved there
                self.message_user(request, f"{code} was not {done}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{code} {done}.", messages.SUCCESS)

    @admin.action(description="Activate selected warehouses", permissions=["change"])
    def activate_warehouses(self, request, queryset):
        self._each_warehouse(request, queryset, service=services.warehouse_activate, done="activated")

    @admin.action(description="Deactivate selected warehouses", permissions=["change"])
    def deactivate_warehouses(self, request, queryset):
        self._each_warehouse(request, queryset, service=services.warehouse_deactivate, done="deactivated")
