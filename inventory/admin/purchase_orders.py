"""Purchase orders in the admin: created by a form, received delivery by delivery, cancelled by an action.

Every write is a service call (`purchase_order_create`, `_receive`, `_cancel`, and inventory.reorder's
`reorder_proposals_draft`, `purchase_order_draft_update`, `purchase_order_confirm`); a refusal shows
on the form or as a message, and nothing is written. A purchase order's page is read-only: an open
order's lines change only by receiving deliveries.

Drafts (proposed by the reorder job, or now by "Propose purchase orders now" on the list) show
"Edit lines", "Confirm" (it becomes open, hence incoming) and "Discard" (cancelled) on their page;
the buttons post the version the page showed, so a draft changed meanwhile (edited, confirmed) is
a conflict, not a silent overwrite. Drafts are not received: "Receive a delivery" is for open orders.

"Receive a delivery" carries a delivery key made when its form is shown: the same form posted
twice (a double click, a resent request) adds its units once, as the service is idempotent by key.
Receiving, cancelling, and editing, confirming or discarding a draft need the purchase order's change
permission; creating, and proposing drafts now, the add permission.
Purchase orders are never deleted: their receipts are referenced by the ledger (PO-<id>).
"""

import re
import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, F, IntegerField, OuterRef, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone

from inventory import reorder, selectors, services
from inventory.admin.forms import ServiceModelForm, add_domain_error
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.errors import DeliveryKeyReused
from inventory.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderReceipt, Warehouse, is_sku
from project.errors import DomainError, NotFound
from project.http.admin_selection import ReadOnlyAdminMixin, selected_ids

MAX_QUANTITY = services.MAX_QUANTITY
MAX_LINES = services.MAX_PURCHASE_ORDER_LINES
# Each purchase order is cancelled in its own short transaction inside the web request.
MAX_CANCELLED_PER_ACTION = 500

# A tab or a comma works as the space: lines pasted from a spreadsheet or a CSV parse too.
WORD_SEPARATOR = re.compile(r"[\s,;]+")
WHOLE_NUMBER = re.compile(r"[0-9]{1,10}")
PO_REFERENCE = re.compile(r"PO-?([0-9]{1,18})", re.IGNORECASE)
LOST_KEY = "This form lost its delivery key; open “Receive a delivery” again."
KEY_REUSED = (
    "This form was already used to receive a delivery with other lines: nothing was added now. "
    "To receive another delivery, open “Receive a delivery” again."
)


# --- the "SKU quantity" lines of a text area -----------------------------------------------------


class StockLinesField(forms.CharField):
    """One "SKU quantity" per line, cleaned to (sku, quantity) pairs in the order written.

    Blank lines are skipped; each bad line is an error naming its line number (as the text area
    counts them), so staff can find it. With `allow_zero`, a line of 0 is dropped (a delivery
    that did not bring that SKU) but at least one line must bring units.
    """

    widget = forms.Textarea(attrs={"rows": 10, "cols": 40, "class": "vLargeTextField", "placeholder": "MUG-1 24"})

    def __init__(self, *, allow_zero: bool = False, **kwargs):
        self.allow_zero = allow_zero
        super().__init__(strip=False, **kwargs)

    def clean(self, value) -> list[tuple[str, int]]:
        text = super().clean(value)
        minimum = 0 if self.allow_zero else 1
        problems: list[str] = []
        pairs: list[tuple[str, int]] = []
        first_line: dict[str, int] = {}
        written = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if not written:
            raise forms.ValidationError("Write at least one line: a SKU, a space and a quantity.")
        if len(written) > MAX_LINES:
            raise forms.ValidationError(f"At most {MAX_LINES} lines; this has {len(written)}.")
        for number, line in written:
            words = WORD_SEPARATOR.split(line)
            if len(words) != 2:
                problems.append(f"Line {number} ({line[:80]!r}): write a SKU, a space and a quantity.")
                continue
            sku, quantity = words
            if not is_sku(sku):
                problems.append(f"Line {number}: {sku[:80]!r} is not a SKU (letters, digits, '.', '_' and '-').")
            elif sku in first_line:
                problems.append(f"Line {number}: {sku} is already on line {first_line[sku]}.")
            elif not WHOLE_NUMBER.fullmatch(quantity) or not minimum <= int(quantity) <= MAX_QUANTITY:
                problems.append(
                    f"Line {number}: the quantity of {sku} must be a whole number from {minimum} to {MAX_QUANTITY:,}."
                )
            else:
                first_line[sku] = number
                pairs.append((sku, int(quantity)))
        if problems:
            raise forms.ValidationError(problems)
        pairs = [(sku, quantity) for sku, quantity in pairs if quantity]
        if not pairs:
            raise forms.ValidationError("Nothing to receive: every quantity is 0.")
        return pairs


# --- forms --------------------------------------------------------------------------------------


class PurchaseOrderForm(ServiceModelForm):
    """Create a purchase order through `purchase_order_create` (the add page only)."""

    what = "purchase order"
    warehouse = forms.ModelChoiceField(queryset=Warehouse.objects.order_by("priority", "code"), to_field_name="code")
    lines = StockLinesField(
        help_text=f"One line per SKU: the SKU, a space and the units ordered, e.g. “MUG-1 24” (at most {MAX_LINES})."
    )
    actor = None  # the admin's user, set by PurchaseOrderAdmin.get_form: the order's created_by

    class Meta:
        model = PurchaseOrder
        fields = ["warehouse", "supplier_reference", "expected_on", "note"]

    def apply(self) -> None:
        data = self.cleaned_data
        self.instance = services.purchase_order_create(
            warehouse_code=data["warehouse"].code,
            lines=data["lines"],
            supplier_reference=data["supplier_reference"],
            expected_on=data["expected_on"],
            note=data["note"],
            actor=self.actor,
        )


def outstanding_lines(order: PurchaseOrder) -> str:
    """What the order still expects, as the delivery form's text: "SKU quantity" per line."""
    return "\n".join(f"{line.product.sku} {line.outstanding}" for line in order.lines.all() if line.outstanding)


class DeliveryForm(forms.Form):
    """One delivery against a purchase order, through `purchase_order_receive`.

    `key` is made when the form is shown and posted back with it: the service adds a key's units
    once, so posting the same form again (same key, same lines) adds nothing.
    """

    title = "Receive a delivery"
    submit_label = "Receive"

    lines = StockLinesField(
        allow_zero=True,
        help_text=(
            "The units that arrived, one “SKU quantity” per line. Filled in with what the order still expects: "
            "change the lines that differ; 0 or no line for a SKU that did not come."
        ),
    )
    allow_over_receipt = forms.BooleanField(
        label="Allow more than expected",
        required=False,
        help_text="Receive a line's units even beyond what it still expects (the supplier sent extra).",
    )
    key = forms.CharField(
        widget=forms.HiddenInput,
        max_length=services.DELIVERY_KEY_MAX_LENGTH,
        error_messages={"required": LOST_KEY, "max_length": LOST_KEY},
    )

    added = False  # whether `submit` added units (not a repeat of a delivery received before)

    def __init__(self, data=None, *, order: PurchaseOrder):
        self.order = order
        super().__init__(data, initial={"lines": outstanding_lines(order), "key": uuid.uuid4().hex})

    def submit(self, *, actor) -> str | None:
        """Receive the delivery; the success message, or None after adding the refusal to the form."""
        data = self.cleaned_data
        try:
            order, added = services.purchase_order_receive(
                purchase_order_id=self.order.pk,
                key=data["key"],
                lines=data["lines"],
                allow_over_receipt=data["allow_over_receipt"],
                actor=actor,
            )
        except DeliveryKeyReused:
            self.add_error(None, KEY_REUSED)
            return None
        except DomainError as exc:
            add_domain_error(self, exc, what="purchase order")
            return None
        self.added = added
        if not added:
            return "This delivery was already received; nothing was added."
        units = sum(quantity for _, quantity in data["lines"])
        done = (
            f"Received {units} unit{'' if units == 1 else 's'} into {self.order.warehouse.code} for {order.reference}."
        )
        if order.status == PurchaseOrder.Status.RECEIVED:
            done += f" {order.reference} is now received in full."
        return done


def draft_lines(order: PurchaseOrder) -> str:
    """A draft's lines as the edit form's text: "SKU quantity" per line."""
    return "\n".join(f"{line.product.sku} {line.ordered}" for line in order.lines.all())


class DraftLinesForm(forms.Form):
    """A draft's lines as they should be, through `purchase_order_draft_update`: a line left out is
    removed, a new SKU added. `version` is the draft's when the form was shown."""

    title = "Edit the draft's lines"
    submit_label = "Save the lines"

    lines = StockLinesField(
        help_text=(
            "One “SKU quantity” per line: the units to order. Delete a line to drop that SKU; "
            "to drop them all, discard the draft."
        )
    )
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    def __init__(self, data=None, *, order: PurchaseOrder):
        self.order = order
        super().__init__(data, initial={"lines": draft_lines(order), "version": order.version})

    def submit(self, *, actor) -> str | None:
        """Save the lines; the success message, or None after adding the refusal to the form."""
        wanted = self.cleaned_data["lines"]
        named = {sku for sku, _ in wanted}
        dropped = [(line.product.sku, 0) for line in self.order.lines.all() if line.product.sku not in named]
        try:
            reorder.purchase_order_draft_update(
                purchase_order_id=self.order.pk,
                lines=[*wanted, *dropped],
                expected_version=self.cleaned_data["version"],
                actor=actor,
            )
        except DomainError as exc:
            add_domain_error(self, exc, what="draft purchase order")
            return None
        return f"Saved the lines of {self.order.reference}."


# --- the admin ----------------------------------------------------------------------------------


class _PartOfPurchaseOrderInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Read-only rows of a purchase order, as a plain table."""

    template = "admin/inventory/purchaseorder/readonly_inline.html"
    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        # Lines and receipts are part of the purchase order: whoever may see it sees them.
        return request.user.has_perm("inventory.view_purchaseorder") or request.user.has_perm(
            "inventory.change_purchaseorder"
        )


class PurchaseOrderLineInline(_PartOfPurchaseOrderInline):
    model = PurchaseOrderLine
    fields = ["sku", "ordered", "received", "outstanding"]
    readonly_fields = fields
    verbose_name_plural = "Lines"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product").order_by("id")

    @admin.display(description="SKU")
    def sku(self, line: PurchaseOrderLine) -> str:
        return line.product.sku

    @admin.display(description="Outstanding")
    def outstanding(self, line: PurchaseOrderLine) -> int:
        return line.outstanding


class PurchaseOrderReceiptInline(_PartOfPurchaseOrderInline):
    model = PurchaseOrderReceipt
    fields = ["key", "units", "actor", "when"]
    readonly_fields = fields
    verbose_name_plural = "Deliveries received"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor").order_by("id")

    @admin.display(description="When")
    def when(self, receipt: PurchaseOrderReceipt) -> str:
        # A read-only column of the admin's own shows str(value): format it as a field would be.
        return formats.localize(timezone.localtime(receipt.created_at))


def _lines_subquery():
    return PurchaseOrderLine.objects.filter(purchase_order=OuterRef("pk")).order_by().values("purchase_order")


@admin.register(PurchaseOrder)
class PurchaseOrderAdmin(ServiceTransactionMixin, admin.ModelAdmin):
    add_form = PurchaseOrderForm
    list_display = ["reference", "supplier_reference", "warehouse", "expected_on", "status", "line_count", "expected"]
    list_filter = ["status", "warehouse"]
    search_fields = ["supplier_reference", "lines__product__sku"]
    search_help_text = "Supplier reference, a SKU on a line, or PO-<number>."
    ordering = ["-id"]
    show_full_result_count = False
    actions = ["cancel_purchase_orders"]
    change_fields = ["reference", "status", "warehouse", "supplier_reference", "expected_on", "note"]
    record_fields = ["version", "created_by", "created_at", "updated_at"]

    def get_queryset(self, request):
        # Subqueries, not joins over the lines: a search by SKU joins the lines too, and would
        # multiply a joined count and sum.
        lines = _lines_subquery()
        expected = lines.filter(received__lt=F("ordered")).annotate(units=Sum(F("ordered") - F("received")))
        return (
            super()
            .get_queryset(request)
            .select_related("warehouse", "created_by")
            .annotate(
                line_count=Coalesce(
                    Subquery(lines.annotate(n=Count("id")).values("n"), output_field=IntegerField()), Value(0)
                ),
                # A received or cancelled order expects nothing, whatever its lines did not get.
                expected_units=Case(
                    When(
                        status=PurchaseOrder.Status.OPEN,
                        then=Coalesce(Subquery(expected.values("units"), output_field=IntegerField()), Value(0)),
                    ),
                    default=Value(0),
                ),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        reference = PO_REFERENCE.fullmatch(search_term.strip())
        if reference:
            # Ours by its reference, and still any whose supplier reference reads the same.
            found = found | queryset.filter(pk=int(reference[1]))
        return found, may_have_duplicates

    @admin.display(description="Reference", ordering="id")
    def reference(self, order: PurchaseOrder) -> str:
        return order.reference

    @admin.display(description="Lines", ordering="line_count")
    def line_count(self, order: PurchaseOrder) -> int:
        return order.line_count

    @admin.display(description="Units still expected", ordering="expected_units")
    def expected(self, order: PurchaseOrder) -> int | str:
        return order.expected_units if order.status == PurchaseOrder.Status.OPEN else "—"

    # --- the add form and the read-only page ---

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            # The form creates the order through purchase_order_create, as this user.
            form = type(self.add_form.__name__, (self.add_form,), {"actor": request.user})
            kwargs["form"] = form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["warehouse", "supplier_reference", "expected_on", "note", "lines"]})]
        return [(None, {"fields": self.change_fields}), ("Record", {"fields": self.record_fields})]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [*self.change_fields, *self.record_fields]

    def get_inlines(self, request, obj):
        return [PurchaseOrderLineInline, PurchaseOrderReceiptInline] if obj is not None else []

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form saved through purchase_order_create."""

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.status == PurchaseOrder.Status.OPEN and self.has_operate_permission(request):
            context["receive_url"] = self._url("receive", obj.pk)
        if obj is not None and obj.status == PurchaseOrder.Status.DRAFT and self.has_operate_permission(request):
            context["edit_lines_url"] = self._url("edit_lines", obj.pk)
            context["confirm_url"] = self._url("confirm", obj.pk)
            context["discard_url"] = self._url("discard", obj.pk)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(self, request, extra_context=None):
        if self.has_add_permission(request):
            extra_context = {**(extra_context or {}), "propose_url": self._url("propose")}
        return super().changelist_view(request, extra_context)

    # --- permissions: created by the form, changed only by deliveries and cancelling ---

    def has_change_permission(self, request, obj=None):
        # No field is editable: a saved form could only write back a stale copy of the row.
        return False

    def has_delete_permission(self, request, obj=None):
        # The ledger's receipts reference the order (PO-<id>): it is cancelled, never deleted.
        return False

    def has_operate_permission(self, request, obj=None) -> bool:
        """Receiving deliveries and cancelling need the purchase order's change permission."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    # --- cancelling ---

    @admin.action(description="Cancel selected purchase orders", permissions=["operate"])
    def cancel_purchase_orders(self, request, queryset):
        """purchase_order_cancel per selected order (one transaction each), in pk order; a refused
        order (received in full) does not stop the others."""
        ids = selected_ids(self, request, queryset, limit=MAX_CANCELLED_PER_ACTION, noun="purchase orders")
        if ids is None:
            return
        cancelled, already, refused = [], [], []
        for order in PurchaseOrder.objects.filter(pk__in=ids).only("id", "status").order_by("pk"):
            if order.status == PurchaseOrder.Status.CANCELLED:
                already.append(order.reference)
                continue
            try:
                services.purchase_order_cancel(purchase_order_id=order.pk, actor=request.user)
            except DomainError as exc:
                refused.append(f"{order.reference} ({exc.detail.rstrip('.')})")
            else:
                self.log_change(request, order, "Cancelled (admin action).")
                cancelled.append(order.reference)
        if cancelled:
            self.message_user(request, f"Cancelled: {', '.join(cancelled)}.", messages.SUCCESS)
        if already:
            self.message_user(request, f"Already cancelled: {', '.join(already)}.", messages.INFO)
        if refused:
            self.message_user(request, f"Not cancelled: {'; '.join(refused)}.", messages.ERROR)

    # --- receiving a delivery ---

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        custom = [
            path("<int:purchase_order_id>/receive/", wrap(self.receive_view), name=f"{prefix}_receive"),
            path("<int:purchase_order_id>/lines/", wrap(self.edit_lines_view), name=f"{prefix}_edit_lines"),
            path("<int:purchase_order_id>/confirm/", wrap(self.confirm_view), name=f"{prefix}_confirm"),
            path("<int:purchase_order_id>/discard/", wrap(self.discard_view), name=f"{prefix}_discard"),
            path("propose/", wrap(self.propose_view), name=f"{prefix}_propose"),
        ]
        # Before the defaults: their "<path:object_id>/" catch-all would take this path.
        return custom + super().get_urls()

    def _url(self, name: str, *args) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def receive_view(self, request: HttpRequest, purchase_order_id: int) -> HttpResponse:
        """Show the delivery form (GET) or receive it (POST); success goes back to the order's page."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        try:
            order = selectors.purchase_order(purchase_order_id=purchase_order_id)
        except NotFound:
            self.message_user(request, f"Purchase order {purchase_order_id} does not exist.", messages.WARNING)
            return HttpResponseRedirect(self._url("changelist"))
        # Only a new form is turned away: a posted one goes to the service, which answers a
        # repeat of a delivery that closed the order as "already received".
        if request.method != "POST" and order.status != PurchaseOrder.Status.OPEN:
            self.message_user(
                request,
                f"{order.reference} is {order.get_status_display().lower()}: nothing more to receive.",
                messages.WARNING,
            )
            return HttpResponseRedirect(self._url("change", order.pk))
        form = DeliveryForm(request.POST if request.method == "POST" else None, order=order)
        return self._lines_form_page(
            request,
            order,
            form,
            # A repeat of a delivery received before added nothing: nothing to log.
            log=lambda done: f"{done} (delivery {form.cleaned_data['key']})" if form.added else None,
        )

    def _lines_form_page(self, request: HttpRequest, order: PurchaseOrder, form, *, log) -> HttpResponse:
        """Run a form of lines against a purchase order (a delivery, a draft's lines): once it is
        done, log `log(message)` (None: nothing) and go back to the order's page; otherwise show
        the order's lines as they are, then the form."""
        if request.method == "POST" and form.is_valid():
            done = form.submit(actor=request.user)
            if done is not None:
                entry = log(done)
                if entry:
                    self.log_change(request, order, entry)
                self.message_user(request, done, messages.SUCCESS)
                return HttpResponseRedirect(self._url("change", order.pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{form.title}: {order.reference}",
            "subtitle": None,
            "order": order,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/inventory/purchaseorder/receive.html", context)

    # --- drafts: propose now, edit the lines, confirm, discard ---

    def propose_view(self, request: HttpRequest) -> HttpResponse:
        """POST: run the reorder job now, as this user (the drafts' created_by); back to the list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            drafts = reorder.reorder_proposals_draft(actor=request.user)
        except DomainError as exc:
            self.message_user(request, f"Nothing was proposed: {exc.detail}", messages.ERROR)
            return HttpResponseRedirect(self._url("changelist"))
        for draft in drafts:
            self.log_addition(request, draft, "Proposed by the reorder job (run from the admin).")
        if drafts:
            self.message_user(
                request,
                f"Proposed {len(drafts)} draft purchase order{'' if len(drafts) == 1 else 's'}: "
                f"{', '.join(draft.reference for draft in drafts)}. Check the lines, then confirm or discard each.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request,
                "Nothing to propose: every level with a reorder point is at or above it, counting open and "
                "draft purchase orders (or the reorder job is running right now).",
                messages.INFO,
            )
        return HttpResponseRedirect(self._url("changelist"))

    def _draft_or_redirect(self, request: HttpRequest, purchase_order_id: int) -> PurchaseOrder | HttpResponse:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        try:
            return selectors.purchase_order(purchase_order_id=purchase_order_id)
        except NotFound:
            self.message_user(request, f"Purchase order {purchase_order_id} does not exist.", messages.WARNING)
            return HttpResponseRedirect(self._url("changelist"))

    def _posted_version(self, request: HttpRequest) -> int | None:
        """The version the page showed (its buttons post it); None if missing or garbled."""
        value = request.POST.get("version", "")
        return int(value) if WHOLE_NUMBER.fullmatch(value) and int(value) >= 1 else None

    def confirm_view(self, request: HttpRequest, purchase_order_id: int) -> HttpResponse:
        """POST: purchase_order_confirm with the version the page showed; back to the order's page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        order = self._draft_or_redirect(request, purchase_order_id)
        if isinstance(order, HttpResponse):
            return order
        try:
            reorder.purchase_order_confirm(
                purchase_order_id=order.pk, expected_version=self._posted_version(request), actor=request.user
            )
        except DomainError as exc:
            self.message_user(request, f"{order.reference} was not confirmed: {exc.detail}", messages.ERROR)
        else:
            self.log_change(request, order, "Confirmed (draft -> open).")
            self.message_user(
                request, f"Confirmed {order.reference}: it is open, and its lines are incoming.", messages.SUCCESS
            )
        return HttpResponseRedirect(self._url("change", order.pk))

    def discard_view(self, request: HttpRequest, purchase_order_id: int) -> HttpResponse:
        """POST: cancel the draft the page showed (not one confirmed since: its version moved on)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        order = self._draft_or_redirect(request, purchase_order_id)
        if isinstance(order, HttpResponse):
            return order
        if order.status != PurchaseOrder.Status.DRAFT:
            level = messages.INFO if order.status == PurchaseOrder.Status.CANCELLED else messages.ERROR
            self.message_user(
                request,
                f"{order.reference} is {order.get_status_display().lower()}, not a draft: not discarded.",
                level,
            )
            return HttpResponseRedirect(self._url("change", order.pk))
        try:
            services.purchase_order_cancel(
                purchase_order_id=order.pk, expected_version=self._posted_version(request), actor=request.user
            )
        except DomainError as exc:
            self.message_user(request, f"{order.reference} was not discarded: {exc.detail}", messages.ERROR)
        else:
            self.log_change(request, order, "Discarded (draft -> cancelled).")
            self.message_user(request, f"Discarded {order.reference}.", messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", order.pk))

    def edit_lines_view(self, request: HttpRequest, purchase_order_id: int) -> HttpResponse:
        """Show a draft's lines as text (GET) or save them (POST); success goes back to its page."""
        order = self._draft_or_redirect(request, purchase_order_id)
        if isinstance(order, HttpResponse):
            return order
        if request.method != "POST" and order.status != PurchaseOrder.Status.DRAFT:
            self.message_user(
                request,
                f"{order.reference} is {order.get_status_display().lower()}: only a draft's lines can be edited.",
                messages.WARNING,
            )
            return HttpResponseRedirect(self._url("change", order.pk))
        form = DraftLinesForm(request.POST if request.method == "POST" else None, order=order)

        def log(done: str) -> str:
            lines = ", ".join(f"{sku} {units}" for sku, units in form.cleaned_data["lines"])
            return f"{done} Lines: {lines}."[:1000]

        return self._lines_form_page(request, order, form, log=log)
