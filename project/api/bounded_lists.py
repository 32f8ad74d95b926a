"""List fields of the API that count their items before validating any of them.

DRF's `ListField(max_length=...)` validates every child first and checks the length afterwards,
so a body of 800,000 bad items (a few MB, under the body limit) costs a second of CPU per
100,000 items and an error per item before the limit is even looked at. These fields refuse an
over-long list first, with one message, so the work a request can cause is bounded by the limit
and never by the input.

The limit may be an int or a callable returning one, so a limit that lives in settings is read
when the request is validated (tests and deployments may change it), not when the module loads.
"""

from collections.abc import Callable

from rest_framework import serializers

Limit = int | Callable[[], int]


def _resolved(limit: Limit) -> int:
    return limit() if callable(limit) else limit


def refuse_if_longer(data, limit: Limit, message: str) -> None:
    """Raise a one-message ValidationError when `data` is a list longer than `limit` items."""
    if isinstance(data, (list, tuple)):
        most = _resolved(limit)
        if len(data) > most:
            raise serializers.ValidationError([message.format(max_length=most)], code="max_length")


class BoundedListField(serializers.ListField):
    """A ListField whose `max_items` is checked before any child is validated."""

    default_error_messages = {"too_long": "At most {max_length} items."}

    def __init__(self, *, max_items: Limit, **kwargs):
        self.max_items = max_items
        if isinstance(max_items, int):
            kwargs["max_length"] = max_items  # never reached first; it puts maxItems in the schema
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        refuse_if_longer(data, self.max_items, self.error_messages["too_long"])
        return super().to_internal_value(data)


class BoundedListSerializer(serializers.ListSerializer):
    """`many=True` of a serializer whose `Meta.list_serializer_class` is this: the list's
    `max_length` (an int or a callable) is checked before any item is validated, and refused
    with one message for the whole list (`error_messages={"too_long": ...}` words it)."""

    default_error_messages = {"too_long": "At most {max_length} items."}

    def __init__(self, *args, max_length: Limit | None = None, **kwargs):
        self.max_items = max_length
        super().__init__(*args, **kwargs)

    def to_internal_value(self, data):
        if self.max_items is not None:
            refuse_if_longer(data, self.max_items, self.error_messages["too_long"])
        return super().to_internal_value(data)
