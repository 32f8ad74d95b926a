"""Stock imports in the admin (upload, progress, stop, queue again) and the CSV exports page."""

from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from inventory import exports, imports
from inventory.models import ImportJob, ImportWarehouse


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
