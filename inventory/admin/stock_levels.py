"""Stock levels in the admin: read-only pages, with the operation forms that change them."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from inventory import exports, selectors
from inventory.admin.forms import STOCK_OPERATIONS, NewReceiptForm
from inventory.models import StockLevel, StockMovement
from project.http.admin_selection import ReadOnlyAdminMixin

MOVEMENTS_SHOWN = 50


@admin.action(description="Export selected stock levels to CSV (streamed, formulas made inert)")
def export_stock_csv(modeladmin, request, queryset):
    return exports.stock_csv(queryset)


class LatestMovementsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # Sliced here, after the inline's filter on the level (a sliced queryset cannot be filtered).
        return super().get_queryset()[:MOVEMENTS_SHOWN]


class StockMovementInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = StockMovement
    formset = LatestMovementsFormSet
    fields = ["created_at", "reason", "delta_on_hand", "delta_reserved", "delta_bucketed", "reference", "note", "actor"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    can_delete = False
    verbose_name_plural = f"Latest movements (up to {MOVEMENTS_SHOWN}, newest first)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(StockLevel)
class StockLevelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Levels are read-only pages; their quantities change only through the operation forms."""

    list_display = [
        "sku", "warehouse", "on_hand", "reserved", "in_buckets", "available", "incoming", "backordered_units",
        "safety_stock", "version", "updated_at",
    ]  # fmt: skip
    list_select_related = ["product", "warehouse"]
    list_filter = ["warehouse", "warehouse__active"]
    search_fields = ["product__sku", "product__name", "=warehouse__code"]
    fields = [
        "product", "warehouse", "on_hand", "reserved", "in_buckets", "available", "backordered", "backorder_cap",
        "safety_stock", "reorder_point", "reorder_quantity", "version", "updated_at",
    ]  # fmt: skip
    readonly_fields = fields
    inlines = [StockMovementInline]
    show_full_result_count = False
    actions = [export_stock_csv]

    def get_queryset(self, request):
        # `available` counts what a hot level's buckets hold (counted in `reserved`).
        return selectors.with_stock_figures(
            super().get_queryset(request).select_related("product", "warehouse")
        ).annotate(available_units=selectors.available_units())

    @admin.display(description="SKU", ordering="product__sku")
    def sku(self, level: StockLevel) -> str:
        return level.product.sku

    @admin.display(description="Available", ordering="available_units")
    def available(self, level: StockLevel) -> int:
        return level.available

    @admin.display(description="In hot buckets", ordering="bucketed")
    def in_buckets(self, level: StockLevel) -> int | str:
        """Free units set apart in the level's stock buckets (hot mode): counted in `reserved`, and
        in `available` too, since orders take them."""
        return level.bucketed or "—"

    @admin.display(description="Backordered", ordering="backordered")
    def backordered_units(self, level: StockLevel) -> str:
        """Units sold beyond the shelf, waiting for stock, against the level's cap."""
        return f"{level.backordered} of {level.backorder_cap}" if level.backorder_cap else "—"

    @admin.display(description="Incoming", ordering="incoming")
    def incoming(self, level: StockLevel) -> int | str:
        """Units its open purchase orders still expect (not on hand yet, not for sale)."""
        return level.incoming or "—"

    @admin.display(description="Operations")
    def operations(self, level: StockLevel) -> str:
        return format_html_join(
            " · ",
            '<a href="{}">{}</a>',
            ((self._url(name, level.pk), name.capitalize()) for name in STOCK_OPERATIONS),
        )

    def get_list_display(self, request):
        if self.may_operate(request):
            return [*self.list_display, "operations"]
        return self.list_display

    def may_operate(self, request: HttpRequest) -> bool:
        """Stock operations need the model's change permission (the page itself stays read-only)."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    # --- operation views ---

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        custom = [
            path("receive/", wrap(self.new_receipt_view), name=f"{prefix}_receive_new"),
            *(
                path(
                    f"<int:level_id>/{name}/",
                    wrap(self.stock_operation_view),
                    {"operation": name},
                    name=f"{prefix}_{name}",
                )
                for name in STOCK_OPERATIONS
            ),
        ]
        # Before the defaults: their "<path:object_id>/" catch-all would take these paths.
        return custom + super().get_urls()

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def stock_operation_view(self, request: HttpRequest, level_id: int, operation: str) -> HttpResponse:
        if not self.may_operate(request):
            raise PermissionDenied
        level = selectors.stock_levels().filter(pk=level_id).first()
        if level is None:
            self.message_user(request, f"Stock level {level_id} does not exist.", messages.WARNING)
            return HttpResponseRedirect(self._url("changelist"))
        form_class = STOCK_OPERATIONS[operation]
        data = request.POST if request.method == "POST" else None
        form = form_class(data, level=level, initial={"expected_version": level.version})
        return self._run_operation(request, form, level)

    def new_receipt_view(self, request: HttpRequest) -> HttpResponse:
        if not self.may_operate(request):
            raise PermissionDenied
        form = NewReceiptForm(request.POST if request.method == "POST" else None)
        return self._run_operation(request, form, None)

    def _run_operation(self, request, form, level: StockLevel | None) -> HttpResponse:
        if request.method == "POST" and form.is_valid():
            done = form.submit(actor=request.user)
            if done is not None:
                self.message_user(request, done, messages.SUCCESS)
                return HttpResponseRedirect(self._url("change", form.result_level.pk))
            if level is not None:
                # Show the figures as they are now, next to the refusal.
                level.refresh_from_db()
                selectors.attach_stock_figures([level])
        label = f"{level.product.sku} @ {level.warehouse.code}" if level is not None else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{form.title}: {label}" if label else form.title,
            "subtitle": None,
            "form": form,
            "level": level,
            "level_label": label,
            "reload_url": request.path,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/inventory/stocklevel/stock_operation.html", context)

    def changelist_view(self, request, extra_context=None):
        extra = {"may_operate": self.may_operate(request), "new_receipt_url": self._url("receive_new")}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"may_operate": False, "operation_links": [], "movements_url": None}
        if object_id.isdigit():
            level_id = int(object_id)
            extra["movements_url"] = (
                reverse(f"{self.admin_site.name}:inventory_stockmovement_changelist") + f"?level__id__exact={level_id}"
            )
            if self.may_operate(request):
                extra["may_operate"] = True
                extra["operation_links"] = [
                    (self._url(name, level_id), form.title) for name, form in STOCK_OPERATIONS.items()
                ]
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})
