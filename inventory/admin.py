"""Staff admin for the catalogue, warehouses, stock levels and the stock ledger.

Stock quantities are never edited as fields: receipts, adjustments, counts and transfers are
admin forms (`admin_forms.py`) that call the services, with the level's version carried in the
form so a concurrent change shows as a conflict instead of being overwritten. Products are
created and edited through the services too (compare-and-set on `version`); warehouses are
activated and deactivated through them as actions.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from inventory import exports, imports, selectors, services
from inventory.admin_forms import STOCK_OPERATIONS, NewReceiptForm, ProductAdminForm, WarehouseAdminForm
from inventory.models import ImportJob, ImportWarehouse, Product, StockLevel, StockMovement, Warehouse
from project.admin_mixins import ReadOnlyAdminMixin
from project.errors import DomainError

MOVEMENTS_SHOWN = 50


class ServiceTransactionMixin:
    """Let the service open the outermost transaction of a POSTed add or change form.

    ModelAdmin.changeform_view wraps a POST in transaction.atomic(); a service inside it would
    run in a savepoint without its bounded retries on lock timeouts and deadlocks (DESIGN §2).
    The form calls the service while it validates (admin_forms.ServiceModelForm), so the only
    other write of the request is the admin's LogEntry, which needs no shared transaction.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return self._changeform_view(request, object_id, form_url, extra_context)


# --- products ----------------------------------------------------------------------------------


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


# --- warehouses --------------------------------------------------------------------------------


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
        """A new warehouse was created by warehouse_create in the form.

        An edit changes only name and priority, which no invariant depends on; update_fields
        keeps a concurrent (de)activation from being overwritten. There is no service for it yet.
        """
        if change:
            obj.save(update_fields=["name", "priority"])

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


# --- stock levels ------------------------------------------------------------------------------


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
    fields = ["created_at", "reason", "delta_on_hand", "delta_reserved", "reference", "note", "actor"]
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

    list_display = ["sku", "warehouse", "on_hand", "reserved", "available", "version", "updated_at"]
    list_select_related = ["product", "warehouse"]
    list_filter = ["warehouse", "warehouse__active"]
    search_fields = ["product__sku", "product__name", "=warehouse__code"]
    fields = ["product", "warehouse", "on_hand", "reserved", "available", "version", "updated_at"]
    readonly_fields = fields
    inlines = [StockMovementInline]
    show_full_result_count = False
    actions = [export_stock_csv]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("product", "warehouse")
            .annotate(available_units=F("on_hand") - F("reserved"))
        )

    @admin.display(description="SKU", ordering="product__sku")
    def sku(self, level: StockLevel) -> str:
        return level.product.sku

    @admin.display(description="Available", ordering="available_units")
    def available(self, level: StockLevel) -> int:
        return level.available

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
        level = StockLevel.objects.select_related("product", "warehouse").filter(pk=level_id).first()
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


# --- ledger ------------------------------------------------------------------------------------


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


# --- imports and exports -----------------------------------------------------------------------


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "UTF-8, one row per line, header `sku,warehouse,on_hand` and optionally `name,price` "
            "(a product that does not exist is created when both are given). `on_hand` is the new "
            "count; rows below the units reserved for orders are refused and listed by line."
        ),
    )


class ImportWarehouseInline(admin.TabularInline):
    model = ImportWarehouse
    fields = ["warehouse", "running"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Warehouses (held by the import while it runs)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("warehouse")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@dataclass(frozen=True)
class StaffExport:
    slug: str  # the download is exports/<slug>.csv under the imports page, named ..._export_<slug>
    label: str
    view: Callable[[HttpRequest], HttpResponse]  # checks its own permission (exports.require_view_permission)


# The CSV downloads linked from the imports page, in the order they are listed.
STAFF_EXPORTS: dict[str, StaffExport] = {}


def mount_export(*, slug: str, label: str, view: Callable[[HttpRequest], HttpResponse]) -> None:
    """List a CSV download on the imports page and serve it under it, staff only.

    Other apps mount theirs from their own admin module (orders mounts the orders export), so
    the stock admin needs no import of them. Admin modules are all loaded (autodiscover) before
    the admin's URLs are built, so a mount made at import is always in them.
    """
    STAFF_EXPORTS[slug] = StaffExport(slug=slug, label=label, view=view)


mount_export(slug="products", label="Products", view=exports.products_csv_view)
mount_export(slug="stock", label="Stock levels", view=exports.stock_csv_view)


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Stock imports: upload a CSV, watch it run (the page refreshes itself), read its row errors.
    The list page also links the CSV exports mounted with `mount_export` (products, stock, and
    the orders export that orders.admin mounts)."""

    list_display = ["id", "original_name", "status", "progress", "rows_ok", "rows_failed", "created_by", "created_at"]
    list_display_links = ["id", "original_name"]
    list_filter = ["status"]
    search_fields = ["=id", "original_name", "created_by__email"]
    list_select_related = ["created_by"]
    ordering = ["-id"]
    fields = [
        "status",
        "progress",
        "original_name",
        "rows_total",
        "rows_done",
        "rows_ok",
        "rows_failed",
        "chunks",
        "attempts",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "error_table",
    ]
    readonly_fields = fields
    inlines = [ImportWarehouseInline]
    actions = ["queue_again", "stop_imports"]
    change_list_template = "admin/inventory/importjob/change_list.html"
    change_form_template = "admin/inventory/importjob/change_form.html"
    REFRESH_SECONDS = 2

    @admin.display(description="Progress")
    def progress(self, job: ImportJob) -> str:
        if job.status == ImportJob.Status.QUEUED and not job.rows_total:
            return "waiting to be read"
        percent = 100 * job.rows_done // job.rows_total if job.rows_total else 100
        return f"{job.rows_done:,} of {job.rows_total:,} rows ({percent}%)"

    @admin.display(description="Chunks applied")
    def chunks(self, job: ImportJob) -> str:
        return f"{job.chunks_applied} of {job.chunks_total} ({job.chunk_rows:,} lines each)"

    @admin.display(description="Errors")
    def error_table(self, job: ImportJob) -> str:
        if not job.errors:
            return "None."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>", ((e["line"] or "-", e["message"]) for e in job.errors)
        )
        shown = (
            f"The first {len(job.errors):,} of {job.rows_failed:,} row errors."
            if job.rows_failed > len(job.errors)
            else ""
        )
        return format_html(
            '<p>{}</p><table><thead><tr><th scope="col">Line</th><th scope="col">Error</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            shown,
            rows,
        )

    def has_change_permission(self, request, obj=None):
        # The page of an import is read-only; the list actions (queue again, stop) need the
        # change permission, asked without an object.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False  # an import is part of the stock's history (its ledger rows point to it)

    # --- upload, progress, exports ---

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        custom = [
            # csrf_exempt here only to move the check: upload_view runs it after the staff check.
            path("upload/", wrap(csrf_exempt(self.upload_view)), name=f"{prefix}_upload"),
            *(
                path(f"exports/{export.slug}.csv", wrap(export.view), name=f"{prefix}_export_{export.slug}")
                for export in STAFF_EXPORTS.values()
            ),
        ]
        return custom + super().get_urls()

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(self._url("upload"))

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        """Staff first, then CSRF, then the form. The CSRF check reads request.POST, which parses
        the whole multipart body into temporary files: it must not run for a non-staff caller
        (admin_view has refused one by the time this runs)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        return self._upload_csrf_checked(request)

    @method_decorator(csrf_protect)
    def _upload_csrf_checked(self, request: HttpRequest) -> HttpResponse:
        form = ImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            job = imports.import_create(upload=form.cleaned_data["file"], actor=request.user)
            self.message_user(request, f"Import {job.pk} is queued; this page follows it.", messages.SUCCESS)
            return HttpResponseRedirect(self._url("change", job.pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Upload a stock CSV",
            "subtitle": None,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/inventory/importjob/upload.html", context)

    def changelist_view(self, request, extra_context=None):
        extra = {
            "upload_url": self._url("upload"),
            "export_links": [(self._url(f"export_{export.slug}"), export.label) for export in STAFF_EXPORTS.values()],
            # The list follows running imports too.
            "refresh_seconds": 5 if ImportJob.objects.filter(status__in=UNFINISHED).exists() else None,
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        unfinished = object_id.isdigit() and ImportJob.objects.filter(pk=object_id, status__in=UNFINISHED).exists()
        extra = {"refresh_seconds": self.REFRESH_SECONDS if unfinished else None, "upload_url": self._url("upload")}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    # --- actions ---

    @admin.action(description="Queue selected unfinished imports again", permissions=["change"])
    def queue_again(self, request, queryset):
        """For an import whose task was lost; a second run of a running import only waits."""
        for job_id in queryset.filter(status__in=UNFINISHED).order_by("pk").values_list("pk", flat=True):
            imports.import_enqueue(import_id=job_id)
            self.message_user(request, f"Import {job_id} is queued again.", messages.SUCCESS)

    @admin.action(description="Stop selected imports (mark failed, release their warehouses)", permissions=["change"])
    def stop_imports(self, request, queryset):
        """Chunks already applied stay applied (each is exact and in the ledger); no more are."""
        for job_id in queryset.filter(status__in=UNFINISHED).order_by("pk").values_list("pk", flat=True):
            imports.import_fail(import_id=job_id, message=f"Stopped by {request.user.email}.")
            self.message_user(request, f"Import {job_id} is stopped.", messages.WARNING)


UNFINISHED = [ImportJob.Status.QUEUED, ImportJob.Status.RUNNING]
