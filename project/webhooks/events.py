"""The event types endpoints may subscribe to, registered by the apps that emit them.

The platform knows no app: each app names its event types in its `AppConfig.ready()`
(`register_event_types({"order.placed": "An order was placed (stock reserved)."})`), and an
endpoint's `events` are checked against the registry (`validate_event_types`). Emitting a type
nobody registered is refused as well (project.webhooks.services.webhook_emit), so a typo in an app
shows in its tests instead of as an event no endpoint can ever subscribe to.
"""

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from project.errors import InvalidInput

# "order.placed", "stock.low": lowercase words joined by dots, at least two of them.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
EVENT_TYPE_MAX_CHARS = 64  # WebhookEvent.type and WebhookEndpoint.events items
ENDPOINT_EVENTS_LIMIT = 100  # event types one endpoint may list

_lock = threading.Lock()
_types: dict[str, str] = {}
_shapes: dict[str, Any] = {}


def register_event_types(types: Mapping[str, str], *, shapes: Mapping[str, Any] | None = None) -> None:
    """Add event types (name: description for staff). Registering a name again with the same
    description is a no-op (ready() can run more than once); another description is a ValueError.

    `shapes` (name: a DRF serializer class) documents the `data` each type carries, for the
    OpenAPI schema's `webhooks` section (project.webhooks.payloads): the app that builds a payload
    says what it is."""
    for name, description in types.items():
        if not isinstance(name, str) or len(name) > EVENT_TYPE_MAX_CHARS or not EVENT_TYPE_PATTERN.match(name):
            raise ValueError(f"{name!r} is not an event type name (lowercase words joined by dots, e.g. order.placed)")
        if not isinstance(description, str) or not description.strip():
            raise ValueError(f"event type {name} needs a description")
    with _lock:
        for name, description in types.items():
            known = _types.get(name)
            if known is not None and known != description:
                raise ValueError(f"event type {name} is already registered with another description")
        _types.update(types)
        _shapes.update(shapes or {})


def unregister_event_types(names: Iterable[str]) -> None:
    """Forget event types (tests that register their own)."""
    with _lock:
        for name in names:
            _types.pop(name, None)
            _shapes.pop(name, None)


def event_shape(name: str) -> Any:
    """The serializer class documenting `data` of this type, or None."""
    with _lock:
        return _shapes.get(name)


def event_types() -> dict[str, str]:
    """Every registered type and its description, sorted by name (a copy)."""
    with _lock:
        return dict(sorted(_types.items()))


def is_event_type(name: object) -> bool:
    with _lock:
        return isinstance(name, str) and name in _types


def validate_event_types(values: object, *, field: str = "events") -> list[str]:
    """An endpoint's event types, checked: a list of 1..ENDPOINT_EVENTS_LIMIT registered names,
    counted before any is checked; duplicates dropped, first order kept. InvalidInput with a
    field error (`field`) otherwise."""
    if not isinstance(values, list | tuple):
        raise InvalidInput(fields={field: ["Must be a list of event types."]})
    if not values:
        raise InvalidInput(fields={field: ["Choose at least one event type."]})
    if len(values) > ENDPOINT_EVENTS_LIMIT:
        raise InvalidInput(fields={field: [f"At most {ENDPOINT_EVENTS_LIMIT} event types."]})
    known = event_types()
    unknown = [value for value in values if not isinstance(value, str) or value not in known]
    if unknown:
        shown = ", ".join(repr(value)[:80] for value in unknown[:10])
        raise InvalidInput(fields={field: [f"Unknown event type(s): {shown}. Known: {', '.join(known) or 'none'}."]})
    return list(dict.fromkeys(values))
