"""What a webhook receiver gets, for the OpenAPI schema (its OpenAPI 3.1 `webhooks` section).

Every event is the Standard Webhooks envelope `{type, timestamp, data}`; `data` depends on the
type, and its shape is the serializer the emitting app registered with the type (the app builds
the payload, so the app documents it). SPECTACULAR_SETTINGS["WEBHOOKS"] names `WEBHOOKS` below: one entry per
event type of project.webhooks.events.
"""

from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema, inline_serializer
from rest_framework import serializers

from project.webhooks.events import event_shape, event_types

SIGNATURE_HELP = """Sent as a POST with a JSON body and the Standard Webhooks headers
(https://www.standardwebhooks.com):

- `webhook-id`: the event's id, the same at every attempt: a receiver drops a repeat by it;
- `webhook-timestamp`: seconds since the epoch when this attempt was signed;
- `webhook-signature`: `v1,` + base64 of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
  keyed with the base64-decoded part of the endpoint's secret after `whsec_`.

Any 2xx acknowledges the event; anything else (or no answer in time) is retried with backoff, and
an endpoint failing long enough is switched off (GET /api/v1/webhooks/endpoints/{id} says why).
Deliveries of one order or one stock level arrive in the order they happened."""


def data_field(event_type: str) -> serializers.Field:
    """The shape of `data` for an event type, as the app that emits it registered it
    (project.webhooks.events.register_event_types(shapes=...)); an object of no documented shape
    otherwise."""
    shape = event_shape(event_type)
    return shape() if shape is not None else serializers.DictField(help_text="The event's data.")


def _component_name(event_type: str) -> str:
    words = event_type.replace(".", "_").split("_")
    return "".join(word.capitalize() for word in words) + "Webhook"


def webhook(event_type: str, description: str) -> OpenApiWebhook:
    envelope = inline_serializer(
        name=_component_name(event_type),
        fields={
            "type": serializers.ChoiceField(choices=[event_type]),
            "timestamp": serializers.DateTimeField(help_text="When the event happened (UTC)."),
            "data": data_field(event_type),
        },
    )
    return OpenApiWebhook(
        name=event_type,
        decorator=extend_schema(
            summary=description,
            description=SIGNATURE_HELP,
            request=envelope,
            responses={200: OpenApiResponse(description="Any 2xx status acknowledges the event.")},
        ),
    )


class _EveryEventType:
    """One webhook per event type registered when the schema is generated (apps register theirs
    in AppConfig.ready(), after this module may have been imported)."""

    def __iter__(self):
        return iter([webhook(event_type, description) for event_type, description in event_types().items()])


WEBHOOKS = _EveryEventType()
