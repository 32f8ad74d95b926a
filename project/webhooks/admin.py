"""Staff admin for webhooks: endpoints (register, edit, re-enable, rotate the secret) and their
delivery log (send a delivery again).

Endpoints are written through project.webhooks.endpoints only: the form calls the service while
it validates, so a refusal (bad URL, stale version) shows on the form and nothing else writes the
row. Deliveries are read-only here; "Send again" calls project.webhooks.services.delivery_resend.
Registered on the admin site when the wiring's project/admin.py imports this module.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from project.errors import DomainError, InvalidInput, VersionConflict
from project.http.admin_selection import selected_ids
from project.webhooks import endpoints, services
from project.webhooks.events import event_types
from project.webhooks.models import WebhookDelivery, WebhookEndpoint

ERROR_PREVIEW_CHARS = 80
# "Select all" over the delivery log can name millions of rows; an action takes at most this many.
ACTION_MAX_DELIVERIES = 1_000
ACTION_MAX_ENDPOINTS = 100
LOST_VERSION = "This form lost the version it was loaded with; reload the page and try again."
EDIT_FIELDS = ["url", "description", "events", "active", "max_concurrency"]
# Shown on an endpoint's page, read-only: what the engine and the services keep.
SIGNING_AND_HEALTH = [
    "secret",
    "consecutive_failures",
    "failing_since",
    "disabled_reason",
    "delivery_log",
    "current_version",
    "created_at",
    "updated_at",
]


def _event_choices() -> list[tuple[str, str]]:
    return [(name, f"{name}: {text}") for name, text in sorted(event_types().items())]


class EndpointAdminForm(forms.ModelForm):
    """Create through `endpoint_create`; edit through `endpoint_update`, compare-and-set on
    `version` (the endpoint's version when the page was loaded, in a hidden field)."""

    url = forms.CharField(label="URL", max_length=endpoints.URL_MAX_LENGTH, widget=forms.URLInput(attrs={"size": 80}))
    events = forms.MultipleChoiceField(choices=_event_choices, widget=forms.CheckboxSelectMultiple)
    max_concurrency = forms.IntegerField(min_value=1, max_value=endpoints.MAX_CONCURRENCY, initial=2)
    version = forms.IntegerField(
        widget=forms.HiddenInput, required=False, min_value=1, error_messages={"invalid": LOST_VERSION}
    )
    actor = None  # the admin's user, set by WebhookEndpointAdmin.get_form

    class Meta:
        model = WebhookEndpoint
        fields = [*EDIT_FIELDS, "version"]

    def _post_clean(self):
        """No model validation: the service checks the fields (one set of rules and messages)."""

    def full_clean(self):
        super().full_clean()
        if self.is_bound and not self._errors:
            try:
                self.apply()
            except DomainError as exc:
                self._show_refusal(exc)

    def apply(self) -> None:
        data = self.cleaned_data
        if self.instance.pk is None:
            self.instance = endpoints.endpoint_create(
                url=data["url"],
                events=data["events"],
                description=data.get("description", ""),
                active=data.get("active", True),
                max_concurrency=data["max_concurrency"],
                actor=self.actor,
            )
            return
        if data.get("version") is None:
            self.add_error(None, LOST_VERSION)
            return
        # changed_data compares with the row as it is now: a field someone else changed since the
        # page was loaded counts as changed, and the stale version refuses the save.
        changes = {name: data[name] for name in self.changed_data if name in endpoints.EDITABLE}
        if changes:
            self.instance = endpoints.endpoint_update(
                endpoint_id=self.instance.pk, expected_version=data["version"], **changes
            )

    def _show_refusal(self, exc: DomainError) -> None:
        if isinstance(exc, VersionConflict):
            current = exc.extra.get("current_version")
            now = f" (it is now at version {current})" if current is not None else ""
            self.add_error(None, f"This endpoint was changed by someone else{now}. Reload the page and try again.")
        elif isinstance(exc, InvalidInput) and exc.fields:
            for name, problems in exc.fields.items():
                if name in self.fields:
                    self.add_error(name, problems)
                else:
                    self.add_error(None, [f"{name}: {problem}" for problem in problems])
        else:
            self.add_error(None, exc.detail)

    def save(self, commit=True):
        # The service already wrote the row; nothing may write it again from the form's values.
        if self.errors:
            raise ValueError("The form has errors; the service did not apply it.")
        self.save_m2m = lambda: None
        return self.instance


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointAdminForm
    list_display = ["id", "url", "active", "event_list", "consecutive_failures", "disabled_reason", "delivery_log"]
    list_display_links = ["id", "url"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    actions = ["rotate_secrets"]
    show_full_result_count = False

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Django wraps a POSTed form in transaction.atomic(); the service must open the outermost
        # transaction to keep its retries (DESIGN §2), as inventory.admin.transactions explains.
        return self._changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": EDIT_FIELDS})]
        return [
            (None, {"fields": [*EDIT_FIELDS, "version"]}),
            (
                "Signing and health",
                {
                    "fields": SIGNING_AND_HEALTH,
                    "description": "Receivers verify the webhook-signature header with this secret. Ticking "
                    "Active on an endpoint that was switched off clears its failures and sends what waits.",
                },
            ),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return SIGNING_AND_HEALTH

    @admin.display(description="Events")
    def event_list(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    @admin.display(description="Version")
    def current_version(self, endpoint: WebhookEndpoint) -> int:
        return endpoint.version

    @admin.display(description="Deliveries")
    def delivery_log(self, endpoint: WebhookEndpoint) -> str:
        url = reverse("admin:project_webhookdelivery_changelist") + f"?endpoint__id__exact={endpoint.pk}"
        return format_html('<a href="{}">Delivery log</a>', url)

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form saved through endpoint_create / endpoint_update."""

    def delete_model(self, request, obj):
        endpoints.endpoint_delete(endpoint_id=obj.pk)

    def get_deleted_objects(self, objs, request):
        """The endpoints and a line for their deliveries, not one line per delivery (a log can hold
        millions): endpoint_delete removes them in one statement."""
        to_delete = [format_html("{} (and its delivery log)", obj) for obj in objs]
        return to_delete, {"webhook endpoints": len(objs)}, set(), []

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through endpoint_delete
        return actions

    @admin.action(description="Rotate the signing secret of the selected endpoints", permissions=["change"])
    def rotate_secrets(self, request, queryset):
        ids = selected_ids(self, request, queryset, limit=ACTION_MAX_ENDPOINTS, noun="endpoints")
        if ids is None:
            return
        for endpoint_id in ids:
            endpoints.endpoint_rotate_secret(endpoint_id=endpoint_id)
        self.message_user(
            request, f"{len(ids)} endpoint(s) have a new secret; update their receivers.", messages.SUCCESS
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "endpoint",
        "event_type",
        "state",
        "attempts",
        "last_status",
        "last_duration_ms",
        "next_attempt_at",
        "error_preview",
    ]
    list_filter = ["state", "endpoint"]
    search_fields = ["=event__webhook_id"]
    readonly_fields = [
        "endpoint",
        "event_type",
        "webhook_id",
        "state",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "last_attempt_at",
        "last_status",
        "last_error",
        "last_duration_ms",
        "delivered_at",
        "created_at",
        "payload",
    ]
    fields = readonly_fields
    actions = ["send_again"]
    show_full_result_count = False  # the log grows with every event; no COUNT(*) per page
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint", "event")

    def get_changelist(self, request, **kwargs):
        changelist = super().get_changelist(request, **kwargs)

        class LogChangeList(changelist):
            def get_queryset(self, request, exclude_parameters=None):
                # The list never shows an event's body, which may be large.
                return super().get_queryset(request, exclude_parameters).defer("event__payload")

        return LogChangeList

    @admin.display(description="Event type", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="webhook-id")
    def webhook_id(self, delivery: WebhookDelivery) -> str:
        return delivery.event.webhook_id

    @admin.display(description="Body")
    def payload(self, delivery: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.event.payload, indent=2, sort_keys=True))

    @admin.display(description="last error")
    def error_preview(self, delivery: WebhookDelivery) -> str:
        text = delivery.last_error
        return text if len(text) <= ERROR_PREVIEW_CHARS else format_html("{}…", text[:ERROR_PREVIEW_CHARS])

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # read-only; "Send again" is the only way to act

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deleted with their endpoint, or pruned

    def has_act_permission(self, request) -> bool:
        return request.user.has_perm("project.change_webhookdelivery")

    @admin.action(description="Send again", permissions=["act"])
    def send_again(self, request, queryset):
        ids = selected_ids(self, request, queryset, limit=ACTION_MAX_DELIVERIES, noun="deliveries")
        if ids is None:
            return
        sent, waiting, refused = 0, 0, []
        for delivery_id in ids:  # one short UPDATE each
            try:
                resent = services.delivery_resend(delivery_id=delivery_id)
            except DomainError as exc:  # deleted with its endpoint since the page was shown
                refused.append(f"#{delivery_id}: {exc.detail}")
            else:
                sent += resent
                waiting += not resent
        if sent:
            self.message_user(request, f"{sent} delivery(ies) will be sent again.", messages.SUCCESS)
        if waiting:
            self.message_user(request, f"{waiting} delivery(ies) were already waiting or being sent.", messages.INFO)
        if refused:
            self.message_user(request, f"Not sent again: {'; '.join(refused[:10])}", messages.WARNING)
