"""Admin for the order jobs: reconciliation runs, sales reports, bulk fulfilments, and the
actions the order list uses to start jobs. Registered when orders/admin.py imports it.

For the orders admin (orders/admin.py), two ready-made actions on Order querysets:
`OrderAdmin.actions = [..., bulk_fulfil_selected, release_expired_selected]`. They use the order
list's `transition` permission (OrderAdmin.has_transition_permission: the order's change
permission), and check it again themselves.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from orders import jobs
from orders.models import BulkFulfilment, ReconciliationRun, SalesReport
from project.errors import DomainError
from project.http.admin_selection import ReadOnlyAdminMixin, selected_ids

IDS_SHOWN = 200


# --- actions for the orders admin ------------------------------------------------------------------


def _may_move_orders(modeladmin, request) -> bool:
    if request.user.has_perm("orders.change_order"):
        return True
    modeladmin.message_user(request, "Moving orders needs the permission to change orders.", messages.ERROR)
    return False


def _selected_ids(modeladmin, request, queryset) -> list[int] | None:
    return selected_ids(modeladmin, request, queryset, limit=jobs.BULK_FULFIL_MAX_ORDERS, noun="orders")


@admin.action(description="Fulfil selected paid orders (background job with a report)", permissions=["transition"])
def bulk_fulfil_selected(modeladmin, request, queryset):
    """Queue a bulk fulfilment of the selection (outbox → orders.bulk_fulfil) and open its report."""
    if not _may_move_orders(modeladmin, request):
        return None
    ids = _selected_ids(modeladmin, request, queryset)
    if ids is None:
        return None
    try:
        run = jobs.bulk_fulfilment_request(order_ids=ids, actor=request.user)
    except DomainError as error:
        modeladmin.message_user(request, f"Not queued: {error.detail} {error.fields or ''}", messages.ERROR)
        return None
    modeladmin.message_user(
        request,
        f"Bulk fulfilment #{run.pk} of {len(run.order_ids)} order(s) queued; this page shows its report.",
        messages.SUCCESS,
    )
    return HttpResponseRedirect(reverse("admin:orders_bulkfulfilment_change", args=[run.pk]))


@admin.action(description="Release selected expired reservations now", permissions=["transition"])
def release_expired_selected(modeladmin, request, queryset):
    """Run the expiry sweep now, limited to the selected orders (those reserved and past due)."""
    if not _may_move_orders(modeladmin, request):
        return
    ids = _selected_ids(modeladmin, request, queryset)
    if ids is None:
        return
    try:
        expired = jobs.expire_reservations(order_ids=ids)
    except DomainError as error:
        modeladmin.message_user(request, f"Nothing was released: {error.detail}", messages.ERROR)
        return
    modeladmin.message_user(request, f"{expired} expired reservation(s) released.", messages.SUCCESS)


# --- reconciliation ---------------------------------------------------------------------------------


def _cells(row: dict) -> str:
    return format_html_join(", ", "{}={}", ((key, value) for key, value in row.items()))


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Past runs with every breach; buttons to run one now and to release expired reservations now."""

    change_list_template = "admin/orders/reconciliationrun/change_list.html"
    list_display = ["id", "started_at", "outcome", "breach_count", "levels_checked", "requested_by"]
    list_filter = ["outcome"]
    list_select_related = ["requested_by"]
    search_fields = ["=id"]
    fields = ["started_at", "finished_at", "outcome", "breach_count", "levels_checked", "requested_by", "report"]
    readonly_fields = fields

    @admin.display(description="breaches")
    def report(self, run: ReconciliationRun) -> str:
        if not run.breaches:
            return "No breach: every invariant holds."
        return format_html(
            "<table><thead><tr><th>invariant</th><th>check</th><th>row</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((b["invariant"], b["check"], _cells(b["row"])) for b in run.breaches),
            ),
        )

    def get_urls(self):
        return [
            path("run/", self.admin_site.admin_view(self.run_now_view), name="orders_reconciliationrun_run"),
            path(
                "release-expired/",
                self.admin_site.admin_view(self.release_expired_view),
                name="orders_reconciliationrun_release_expired",
            ),
            *super().get_urls(),
        ]

    def run_now_view(self, request: HttpRequest) -> HttpResponse:
        """Reconcile now (a read-only snapshot, a few seconds) and show the run's report."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = jobs.reconcile_stock(requested_by=request.user)
        if run is None:
            self.message_user(request, "A reconciliation is running already; try again shortly.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:orders_reconciliationrun_changelist"))
        level = messages.SUCCESS if run.outcome == ReconciliationRun.Outcome.CLEAN else messages.ERROR
        self.message_user(request, f"Reconciliation #{run.pk}: {run.breach_count} breach(es).", level)
        return HttpResponseRedirect(reverse("admin:orders_reconciliationrun_change", args=[run.pk]))

    def release_expired_view(self, request: HttpRequest) -> HttpResponse:
        """Run the whole expiry sweep now (what the every-minute job does)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("orders.change_order"):
            raise PermissionDenied
        expired = jobs.expire_reservations()
        self.message_user(request, f"{expired} expired reservation(s) released.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:orders_reconciliationrun_changelist"))


# --- sales reports ------------------------------------------------------------------------------------


@admin.register(SalesReport)
class SalesReportAdmin(admin.ModelAdmin):
    list_display = ["day", "orders", "units", "revenue", "currency", "time_zone", "generated_at", "download"]
    date_hierarchy = "day"
    search_fields = ["day"]
    fields = ["day", "time_zone", "orders", "units", "revenue", "currency", "generated_at", "download"]
    readonly_fields = fields

    @admin.display(description="CSV")
    def download(self, report: SalesReport) -> str:
        url = reverse("admin:orders_salesreport_download", args=[report.pk])
        return format_html('<a href="{}">sales-{}.csv</a>', url, report.day)

    def get_urls(self):
        return [
            path(
                "<int:report_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="orders_salesreport_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, report_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = SalesReport.objects.filter(pk=report_id).first()
        if report is None:
            return HttpResponse("No such report.", status=404, content_type="text/plain")
        response = HttpResponse(report.csv, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="sales-{report.day.isoformat()}.csv"'
        return response

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# --- bulk fulfilments -----------------------------------------------------------------------------------


def _ids(values: list[int]) -> str:
    shown = ", ".join(str(i) for i in values[:IDS_SHOWN])
    return shown + (f" … and {len(values) - IDS_SHOWN} more" if len(values) > IDS_SHOWN else "") or "—"


@admin.register(BulkFulfilment)
class BulkFulfilmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "state", "requested", "fulfilled_count", "not_taken", "requested_by", "created_at"]
    list_filter = ["state"]
    list_select_related = ["requested_by"]
    search_fields = ["=id"]
    fields = [
        "state",
        "requested_by",
        "created_at",
        "finished_at",
        "fulfilled_ids",
        "locked_ids",
        "not_paid_ids",
        "missing_ids",
    ]
    readonly_fields = fields

    @admin.display(description="orders")
    def requested(self, run: BulkFulfilment) -> int:
        return len(run.order_ids)

    @admin.display(description="fulfilled")
    def fulfilled_count(self, run: BulkFulfilment) -> int:
        return len(run.fulfilled)

    @admin.display(description="not taken")
    def not_taken(self, run: BulkFulfilment) -> int:
        return len(run.locked) + len(run.not_paid) + len(run.missing)

    @admin.display(description="fulfilled")
    def fulfilled_ids(self, run: BulkFulfilment) -> str:
        return _ids(run.fulfilled)

    @admin.display(description="locked by another transaction (not taken)")
    def locked_ids(self, run: BulkFulfilment) -> str:
        return _ids(run.locked)

    @admin.display(description="not paid")
    def not_paid_ids(self, run: BulkFulfilment) -> str:
        return _ids(run.not_paid)

    @admin.display(description="unknown ids")
    def missing_ids(self, run: BulkFulfilment) -> str:
        return _ids(run.missing)
