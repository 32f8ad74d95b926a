"""Shapes of the staff webhook API: requests (bounded, unknown fields refused) and responses."""

from rest_framework import serializers

from project.api.bounded_lists import BoundedListField
from project.webhooks import endpoints
from project.webhooks.events import event_types
from project.webhooks.models import WebhookDelivery

ERROR_EXCERPT_CHARS = 300
URL_HELP = (
    "Where events are POSTed: http(s), no credentials, at most 2000 characters (https only unless "
    "WEBHOOK_ALLOW_HTTP). A literal private, loopback or link-local address is refused."
)


def _events_field(*, required: bool) -> BoundedListField:
    """The event types an endpoint wants, each one known; the list is counted against the number of
    known types before any item is looked at. Built per serializer, from the types known now."""
    known = sorted(event_types())
    return BoundedListField(
        child=serializers.ChoiceField(choices=known),
        max_items=len(known),
        allow_empty=False,
        required=required,
        help_text="Event types to receive (GET /webhooks/event-types).",
    )


class _RefusesUnknownFields(serializers.Serializer):
    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
        return attrs


class WebhookEndpointCreateSerializer(_RefusesUnknownFields):
    url = serializers.CharField(max_length=endpoints.URL_MAX_LENGTH, help_text=URL_HELP)
    events = serializers.ListField()  # replaced in __init__
    description = serializers.CharField(
        max_length=endpoints.DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True, default=""
    )
    active = serializers.BooleanField(required=False, default=True)
    max_concurrency = serializers.IntegerField(
        min_value=1,
        max_value=endpoints.MAX_CONCURRENCY,
        required=False,
        default=2,
        help_text="Deliveries to this endpoint in flight at once, at most.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["events"] = _events_field(required=True)


class WebhookEndpointUpdateSerializer(_RefusesUnknownFields):
    url = serializers.CharField(max_length=endpoints.URL_MAX_LENGTH, required=False, help_text=URL_HELP)
    events = serializers.ListField(required=False)  # replaced in __init__
    description = serializers.CharField(max_length=endpoints.DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True)
    active = serializers.BooleanField(
        required=False,
        help_text="false switches the endpoint off; true turns it back on and clears its failure count.",
    )
    max_concurrency = serializers.IntegerField(min_value=1, max_value=endpoints.MAX_CONCURRENCY, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["events"] = _events_field(required=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if not attrs:
            raise serializers.ValidationError("Send at least one field to change.")
        return attrs


class WebhookEndpointSerializer(serializers.Serializer):
    """An endpoint as the list shows it: everything but its secret."""

    id = serializers.IntegerField()
    url = serializers.CharField()
    description = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    max_concurrency = serializers.IntegerField()
    consecutive_failures = serializers.IntegerField(help_text="Failed attempts in a row.")
    failing_since = serializers.DateTimeField(allow_null=True)
    disabled_reason = serializers.CharField(help_text="Why the delivery engine switched it off (empty if it did not).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    version = serializers.IntegerField(help_text="Also its ETag; PATCH needs it in If-Match.")


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    """One endpoint, with the secret its receiver verifies signatures with."""

    secret = serializers.CharField(help_text='Standard Webhooks signing secret, "whsec_" + base64 of the key.')


class _Excerpt(serializers.CharField):
    def to_representation(self, value):
        text = super().to_representation(value)
        return text if len(text) <= ERROR_EXCERPT_CHARS else text[: ERROR_EXCERPT_CHARS - 1] + "…"


class WebhookDeliverySerializer(serializers.Serializer):
    """One event to one endpoint: a row of the delivery log."""

    id = serializers.IntegerField()
    event_type = serializers.CharField(source="event.type")
    webhook_id = serializers.CharField(
        source="event.webhook_id", help_text="The webhook-id header, the same at every attempt."
    )
    state = serializers.ChoiceField(choices=WebhookDelivery.State.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_status = serializers.IntegerField(allow_null=True, help_text="The receiver's HTTP status at the last attempt.")
    last_error = _Excerpt(help_text=f"The last attempt's error, at most {ERROR_EXCERPT_CHARS} characters.")
    last_duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class WebhookDeliveryQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=WebhookDelivery.State.choices, required=False)


class WebhookEventTypeSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()
