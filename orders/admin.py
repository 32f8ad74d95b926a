"""Staff admin for orders (with their lines and allocations) and idempotency keys.

Orders are placed through the API and the shop, never here, and are never deleted (their ledger
rows and allocations refer to them). Every field is read-only: the status moves only through
the lifecycle services, run by the pay / fulfil / cancel / return actions on the list (each
order in its own transaction, one message per refusal) and by the same moves as buttons on an
order's page. The buttons carry the version the page showed, so acting on a stale page is
refused ("changed by someone else") rather than applied.

The page's "Shipping" section shows, per line and warehouse, what is allocated, shipped, promised
to pending shipments and left to ship, with the order's shipments (pending ones can be shipped or
cancelled there) and returns. The Ship and Return forms (their own pages under the order) call
the shipment and return services with the order's version, like the buttons.

Moving orders needs the order's change permission; seeing them, the view permission. Shipments
and returns have read-only pages of their own; they change only through the order's page.
"""

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from inventory.admin import mount_export
from orders import services
from orders.admin_forms import (
    ORDER_TRANSITIONS,
    RETURNABLE,
    SHIPPABLE,
    OrderLinesForm,
    OrderTransition,
    OrderTransitionForm,
    ReturnForm,
    ShipmentActionForm,
    ShipmentForm,
    active_warehouses,
    refusal_message,
    refused,
    transitions_offered,
)
from orders.admin_jobs import bulk_fulfil_selected, release_expired_selected
from orders.exports import orders_csv_view
from orders.models import (
    Allocation,
    IdempotencyKey,
    Order,
    OrderLine,
    OrderReturn,
    ReturnLine,
    Shipment,
    ShipmentLine,
    return_reference,
    shipment_reference,
)
from orders.selectors import order_returns, order_shipments, shipping_progress
from project.errors import DomainError
from project.http.admin_selection import ReadOnlyAdminMixin

# Listed with the stock exports on the imports page: admin/inventory/importjob/exports/orders.csv.
mount_export(slug="orders", label="Orders", view=orders_csv_view)

# Each order moves in its own short transaction inside the web request: a selection larger than
# this would outlast the worker's timeout. Bulk fulfilment of large batches is a Celery job.
MAX_ORDERS_PER_ACTION = 500


class OrderLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The order's lines and where their units are allocated, read-only (lines never change)."""

    model = OrderLine
    template = "admin/orders/order/lines_inline.html"
    fields = ["sku", "product_name", "quantity", "unit_price", "allocated"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Lines and allocations"

    def get_queryset(self, request):
        allocations = Allocation.objects.select_related("stock_level__warehouse").order_by(
            "stock_level__warehouse__priority", "stock_level__warehouse__code"
        )
        return (
            super()
            .get_queryset(request)
            .select_related("product")
            .prefetch_related(Prefetch("allocations", queryset=allocations))
        )

    @admin.display(description="SKU")
    def sku(self, line: OrderLine) -> str:
        return line.product.sku

    @admin.display(description="Product")
    def product_name(self, line: OrderLine) -> str:
        return line.product.name

    @admin.display(description="Allocated (warehouse: units)")
    def allocated(self, line: OrderLine) -> str:
        url_name = f"{self.admin_site.name}:inventory_stocklevel_change"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>: {}{}',
            (
                (
                    reverse(url_name, args=[a.stock_level_id]),
                    a.stock_level.warehouse.code,
                    a.quantity,
                    f" ({a.backordered} backordered)" if a.backordered else "",
                )
                for a in line.allocations.all()
            ),
        )

    def has_view_permission(self, request, obj=None):
        # Lines are part of the order: whoever may see the order sees its lines.
        return request.user.has_perm("orders.view_order") or request.user.has_perm("orders.change_order")


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["number", "customer", "status", "total", "currency", "created_at", "expires_at", "version"]
    list_select_related = ["user"]
    list_filter = ["status", "created_at", "expires_at"]
    date_hierarchy = "created_at"
    search_fields = ["number", "user__email", "reference"]
    show_full_result_count = False
    inlines = [OrderLineInline]
    actions = [
        "pay_orders",
        "fulfil_orders",
        "cancel_orders",
        "return_orders",
        bulk_fulfil_selected,
        release_expired_selected,
    ]
    fieldsets = [
        (None, {"fields": ["number", "status", "version", "user", "reference"]}),
        ("Amounts", {"fields": ["total", "currency", "paid_amount"]}),
        (
            "Shipping address",
            {
                "fields": [
                    "shipping_name",
                    "shipping_line1",
                    "shipping_line2",
                    "shipping_city",
                    "shipping_postal_code",
                    "shipping_country",
                ]
            },
        ),
        (
            "Timeline",
            {
                "fields": [
                    "created_at",
                    "expires_at",
                    "paid_at",
                    "fulfilled_at",
                    "cancelled_at",
                    "expired_at",
                    "returned_at",
                    "updated_at",
                ]
            },
        ),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")

    @admin.display(description="Customer", ordering="user__email")
    def customer(self, order: Order) -> str:
        return order.user.email

    # --- permissions: view-only pages, moves through the services ---

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # No field is editable: a saved form could only write back a stale copy of the row.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_transition_permission(self, request, obj=None) -> bool:
        """Pay, fulfil, cancel and return need the order's change permission."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    # --- actions on the list ---

    def _move_each(self, request, queryset, transition: OrderTransition) -> None:
        """Run one transition per selected order, each in its own transaction, and report each.

        A refused order does not stop the others. Orders go in pk order, the system's lock order.
        """
        selected = list(queryset.order_by("pk").values_list("pk", "number")[: MAX_ORDERS_PER_ACTION + 1])
        if len(selected) > MAX_ORDERS_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_ORDERS_PER_ACTION} orders at a time; narrow the list with its filters. "
                "Nothing was done.",
                messages.ERROR,
            )
            return
        moved = []
        for order_id, number in selected:
            try:
                order = transition.run(order_id=order_id, actor=request.user, expected_version=None)
            except DomainError as exc:
                self.message_user(request, refusal_message(number, transition, exc), messages.ERROR)
            else:
                self.log_change(request, order, f"{transition.label} (admin action).")
                moved.append(number)
        if moved:
            count = f"{len(moved)} order" if len(moved) == 1 else f"{len(moved)} orders"
            self.message_user(request, f"{transition.done.capitalize()} {count}: {', '.join(moved)}.", messages.SUCCESS)

    @admin.action(description="Pay selected orders (simulated payment)", permissions=["transition"])
    def pay_orders(self, request, queryset):
        self._move_each(request, queryset, ORDER_TRANSITIONS["pay"])

    @admin.action(description="Fulfil selected orders", permissions=["transition"])
    def fulfil_orders(self, request, queryset):
        self._move_each(request, queryset, ORDER_TRANSITIONS["fulfil"])

    @admin.action(description="Cancel selected orders (releases their stock)", permissions=["transition"])
    def cancel_orders(self, request, queryset):
        self._move_each(request, queryset, ORDER_TRANSITIONS["cancel"])

    @admin.action(description="Return selected orders (restocks them)", permissions=["transition"])
    def return_orders(self, request, queryset):
        self._move_each(request, queryset, ORDER_TRANSITIONS["return"])

    # --- the same moves as buttons on an order's page ---

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        custom = [
            path("<int:order_id>/transition/", wrap(self.transition_view), name=f"{prefix}_transition"),
            path("<int:order_id>/ship/", wrap(self.ship_view), name=f"{prefix}_ship"),
            path("<int:order_id>/return/", wrap(self.return_view), name=f"{prefix}_return"),
            *(
                path(
                    f"<int:order_id>/shipments/<int:shipment_id>/{action}/",
                    wrap(self.shipment_view),
                    {"action": action},
                    name=f"{prefix}_shipment_{action}",
                )
                for action in ("ship", "cancel")
            ),
        ]
        # Before the defaults: their "<path:object_id>/" catch-all would take these paths.
        return custom + super().get_urls()

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context.update(self._shipping_context(request, obj))
        if obj is not None and self.has_transition_permission(request, obj):
            context.update(
                transitions=transitions_offered(obj, now=timezone.now()),
                transition_url=self._url("transition", obj.pk),
                transition_form=OrderTransitionForm(initial={"expected_version": obj.version}),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _shipping_context(self, request, order: Order) -> dict:
        """The "Shipping" section: progress per line and warehouse, shipments, returns. A fixed
        number of queries however many lines, shipments and returns."""
        may_move = self.has_transition_permission(request, order)
        shipment_url = f"{self.admin_site.name}:{self.opts.app_label}_shipment_change"
        shipments = [
            {
                "shipment": shipment,
                "url": reverse(shipment_url, args=[shipment.pk]),
                "ship_url": self._url("shipment_ship", order.pk, shipment.pk),
                "cancel_url": self._url("shipment_cancel", order.pk, shipment.pk),
                "may_move": may_move and shipment.status == Shipment.Status.PENDING and order.status in SHIPPABLE,
            }
            for shipment in order_shipments(order_id=order.pk)
        ]
        return {
            "shipping_lines": list(shipping_progress(order_id=order.pk).values()),
            "shipments": shipments,
            "order_returns": list(order_returns(order_id=order.pk).order_by("id")),
            "ship_url": self._url("ship", order.pk) if may_move and order.status in SHIPPABLE else None,
            "return_url": self._url("return", order.pk) if may_move and order.status in RETURNABLE else None,
        }

    def _posted_order_number(self, request: HttpRequest, order_id: int) -> tuple[str | None, HttpResponse | None]:
        """The number of the order a button on its page posted to, or the answer instead: 405 for
        anything but POST, 403 without the right to move orders, back to the list if it is gone."""
        if request.method != "POST":
            return None, HttpResponseNotAllowed(["POST"])
        if not self.has_transition_permission(request):
            raise PermissionDenied
        number = Order.objects.filter(pk=order_id).values_list("number", flat=True).first()
        if number is None:
            self.message_user(request, f"Order {order_id} does not exist.", messages.WARNING)
            return None, HttpResponseRedirect(self._url("changelist"))
        return number, None

    def transition_view(self, request: HttpRequest, order_id: int) -> HttpResponse:
        """POST from an order's page: run the chosen move with the version the page showed."""
        number, refusal = self._posted_order_number(request, order_id)
        if refusal is not None:
            return refusal
        form = OrderTransitionForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    self.message_user(request, f"{number}: {error}", messages.ERROR)
            return HttpResponseRedirect(self._url("change", order_id))
        transition = form.chosen()
        try:
            order = transition.run(
                order_id=order_id, actor=request.user, expected_version=form.cleaned_data["expected_version"]
            )
        except DomainError as exc:
            self.message_user(request, refusal_message(number, transition, exc), messages.ERROR)
        else:
            self.log_change(request, order, f"{transition.label} (order page).")
            self.message_user(request, f"{number} {transition.done} (now version {order.version}).", messages.SUCCESS)
        # Back to the page, which shows the order as it is now (status and version).
        return HttpResponseRedirect(self._url("change", order_id))

    # --- shipping and returns by line ---

    def ship_view(self, request: HttpRequest, order_id: int) -> HttpResponse:
        """A shipment from one warehouse; `?warehouse=CODE` fills in what is left there."""
        return self._lines_form_view(request, order_id, ShipmentForm, SHIPPABLE, warehouse=request.GET.get("warehouse"))

    def return_view(self, request: HttpRequest, order_id: int) -> HttpResponse:
        return self._lines_form_view(request, order_id, ReturnForm, RETURNABLE)

    def _lines_form_view(
        self, request: HttpRequest, order_id: int, form_class: type[OrderLinesForm], allowed: frozenset, **options
    ) -> HttpResponse:
        """Show the form (GET) or run it (POST). A refusal is an error message on the form as
        posted, which changed nothing; success goes back to the order's page."""
        if not self.has_transition_permission(request):
            raise PermissionDenied
        order = Order.objects.filter(pk=order_id).first()
        if order is None:
            self.message_user(request, f"Order {order_id} does not exist.", messages.WARNING)
            return HttpResponseRedirect(self._url("changelist"))
        if request.method != "POST" and order.status not in allowed:
            self.message_user(
                request, f"{order.number} is {order.status}: it cannot be {form_class.done} now.", messages.WARNING
            )
            return HttpResponseRedirect(self._url("change", order_id))
        form = form_class(
            request.POST if request.method == "POST" else None,
            order=order,
            progress=shipping_progress(order_id=order.pk),
            warehouses=active_warehouses(),
            initial={"expected_version": order.version},
            **options,
        )
        if request.method == "POST" and form.is_valid():
            try:
                done = form.submit(actor=request.user)
            except DomainError as exc:
                self.message_user(request, refused(order.number, form.done, exc), messages.ERROR)
            else:
                order.refresh_from_db()
                self.log_change(request, order, f"{form.title}: {done} (order page).")
                self.message_user(
                    request, f"{done} {order.number} is now {order.status} (version {order.version}).", messages.SUCCESS
                )
                return HttpResponseRedirect(self._url("change", order_id))
        prefill = []  # the ship form's "fill in what is left at" links, one per warehouse (no JavaScript)
        if isinstance(form, ShipmentForm):
            here = self._url("ship", order.pk)
            prefill = [(code, f"{here}?{urlencode({'warehouse': code})}") for code, _ in form.warehouses]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{form.title}: order {order.number}",
            "subtitle": None,
            "order": order,
            "form": form,
            "prefill": prefill,
            "reload_url": request.get_full_path(),
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/orders/order/line_form.html", context)

    def shipment_view(self, request: HttpRequest, order_id: int, shipment_id: int, action: str) -> HttpResponse:
        """POST from an order's page: ship or cancel one pending shipment, with the shipment's
        version the page showed (a shipment changed since is refused, never acted on)."""
        number, refusal = self._posted_order_number(request, order_id)
        if refusal is not None:
            return refusal
        what, done = shipment_reference(number, shipment_id), {"ship": "shipped", "cancel": "cancelled"}[action]
        form = ShipmentActionForm(request.POST)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    self.message_user(request, f"{what}: {error}", messages.ERROR)
            return HttpResponseRedirect(self._url("change", order_id))
        data = form.cleaned_data
        try:
            if action == "ship":
                services.shipment_ship(
                    order_id=order_id,
                    shipment_id=shipment_id,
                    tracking_number=data["tracking_number"].strip() or None,
                    actor=request.user,
                    expected_version=data["expected_version"],
                )
            else:
                services.shipment_cancel(
                    order_id=order_id,
                    shipment_id=shipment_id,
                    actor=request.user,
                    expected_version=data["expected_version"],
                )
        except DomainError as exc:
            self.message_user(request, refused(what, done, exc), messages.ERROR)
        else:
            order = Order.objects.get(pk=order_id)
            self.log_change(request, order, f"Shipment S{shipment_id} {done} (order page).")
            self.message_user(
                request, f"{what} {done}. {number} is now {order.status} (version {order.version}).", messages.SUCCESS
            )
        return HttpResponseRedirect(self._url("change", order_id))


class _PartOfParentInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Read-only lines of a shipment or return: whoever may see the parent sees its lines."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        parent = self.parent_model._meta
        return request.user.has_perm(f"{parent.app_label}.view_{parent.model_name}") or request.user.has_perm(
            f"{parent.app_label}.change_{parent.model_name}"
        )


class ShipmentLineInline(_PartOfParentInline):
    model = ShipmentLine
    fields = ["sku", "quantity"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("line__product")

    @admin.display(description="SKU")
    def sku(self, item: ShipmentLine) -> str:
        return item.line.product.sku


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: shipments are created, shipped and cancelled from their order's page (services)."""

    list_display = [
        "reference",
        "order",
        "warehouse",
        "status",
        "carrier",
        "tracking_number",
        "created_at",
        "shipped_at",
    ]
    list_select_related = ["order", "warehouse"]
    list_filter = ["status", "warehouse", "created_at"]
    search_fields = ["order__number", "tracking_number"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = [
        "order",
        "warehouse",
        "status",
        "carrier",
        "tracking_number",
        "version",
        "created_by",
        "created_at",
        "shipped_at",
        "cancelled_at",
    ]
    readonly_fields = fields
    inlines = [ShipmentLineInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("order", "warehouse", "created_by")

    @admin.display(description="Shipment", ordering="id")
    def reference(self, shipment: Shipment) -> str:
        return shipment_reference(shipment.order.number, shipment.pk)


class ReturnLineInline(_PartOfParentInline):
    model = ReturnLine
    fields = ["sku", "quantity", "warehouse", "disposition"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("line__product", "warehouse")

    @admin.display(description="SKU")
    def sku(self, item: ReturnLine) -> str:
        return item.line.product.sku


@admin.register(OrderReturn)
class OrderReturnAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: returns are recorded from their order's page (or the API) through the service."""

    list_display = ["reference", "order", "reason", "refund_amount", "created_at", "created_by"]
    list_select_related = ["order", "created_by"]
    list_filter = ["lines__disposition", "lines__warehouse", "created_at"]
    search_fields = ["order__number", "reason"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = ["order", "reason", "refund_amount", "version", "created_by", "created_at"]
    readonly_fields = fields
    inlines = [ReturnLineInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("order", "created_by")

    @admin.display(description="Return", ordering="id")
    def reference(self, record: OrderReturn) -> str:
        return return_reference(record.order.number, record.pk)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: a key is the proof that its order was created once. Deleting one would let a
    client's retry create a second order, so keys leave only through the pruning job."""

    list_display = ["customer", "key", "state", "response_status", "order", "created_at"]
    list_select_related = ["user", "order"]
    list_filter = ["state"]
    search_fields = ["key", "user__email"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    fields = [
        "user",
        "key",
        "state",
        "fingerprint",
        "lease_expires_at",
        "response_status",
        "stored_response",
        "order",
        "created_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "order")

    @admin.display(description="Customer", ordering="user__email")
    def customer(self, key: IdempotencyKey) -> str:
        return key.user.email

    @admin.display(description="Stored response body")
    def stored_response(self, key: IdempotencyKey) -> str:
        if key.response_body is None:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(key.response_body, indent=2, sort_keys=True))
