"""Webhook endpoints as staff manage them: register, edit, re-enable, rotate the secret, delete;
and the reads of the staff API and admin (the endpoint list, one endpoint's delivery log).

Every write is one transaction (`atomic_with_retry`) and every edit a compare-and-set on
`version`, as product edits are (DESIGN.md §4): a stale `expected_version` raises
VersionConflict (the API answers 412), never a silent overwrite.

URLs are checked for their shape only: http(s), no credentials, a bounded length, https alone
unless settings.WEBHOOK_ALLOW_HTTP. The host is NOT resolved here: a name's address can change
after registration (DNS rebinding), so the delivery checks the address it actually connected to.
A literal private, loopback or link-local address (or `localhost`) is refused early, with a clear
error, unless settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES.
"""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db.models import F, QuerySet
from django.utils import timezone

from project.db.transactions import Retry, atomic_with_retry
from project.errors import InvalidInput, NotFound, VersionConflict
from project.values import is_whole_number
from project.webhooks import events as event_catalogue
from project.webhooks import services, signing
from project.webhooks.http import address_refusal
from project.webhooks.models import WebhookDelivery, WebhookEndpoint

URL_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 200
MAX_CONCURRENCY = 20
# What staff may change; the counters and the disabled reason belong to the delivery engine.
EDITABLE = frozenset({"url", "events", "description", "active", "max_concurrency"})

_URL_SHAPE = URLValidator(schemes=["http", "https"])


def _literal_address_refusal(host: str) -> str | None:
    """Why the address a host names literally ("10.0.0.1", "[::1]") may not be reached, by the
    rule the delivery applies to every address it connects to (http.address_refusal); None for a
    public address or a name. Other spellings a resolver would read as an address ("127.1",
    "0x7f.0.0.1", "2130706433") never get here: the URL's shape check refuses them (a host name
    needs a top-level domain)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_refusal(host)


def check_url(url: object) -> str:
    """`url` if a webhook may be sent there; else InvalidInput on the field `url`."""

    def refuse(message: str):
        raise InvalidInput(fields={"url": [message]})

    if not isinstance(url, str) or not url:
        refuse("Enter the URL to send webhooks to.")
    if len(url) > URL_MAX_LENGTH:
        refuse(f"At most {URL_MAX_LENGTH} characters.")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        refuse("A URL has no spaces or control characters.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        refuse("Only http and https URLs are accepted.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        refuse("Credentials in the URL are not accepted; receivers verify the webhook signature.")
    try:
        _URL_SHAPE(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except (ValidationError, ValueError):
        refuse("Enter a valid URL.")
    if parts.scheme.lower() == "http" and not settings.WEBHOOK_ALLOW_HTTP:
        refuse("Only https URLs are accepted.")
    host = (parts.hostname or "").rstrip(".")
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        if _literal_address_refusal(host) is not None:
            refuse("This is a private, loopback or link-local address; webhooks go to public receivers.")
        if host == "localhost" or host.endswith(".localhost"):
            refuse("localhost is a loopback address; webhooks go to public receivers.")
    return url


def _check_fields(fields: dict) -> dict:
    """The editable fields checked and normalised; InvalidInput naming each bad field."""
    unknown = set(fields) - EDITABLE
    if unknown:
        raise InvalidInput(fields={name: ["This field cannot be changed."] for name in sorted(unknown)})
    checked = dict(fields)
    if "url" in fields:
        checked["url"] = check_url(fields["url"])
    if "events" in fields:
        wanted = fields["events"]
        known = event_catalogue.event_types()
        if not isinstance(wanted, (list, tuple)) or not wanted:
            raise InvalidInput(fields={"events": ["Choose at least one event type."]})
        if len(wanted) > len(known):  # counted before any item is looked at
            raise InvalidInput(fields={"events": [f"At most {len(known)} event types."]})
        checked["events"] = sorted(set(event_catalogue.validate_event_types(list(wanted))))
    if "description" in fields:
        description = fields["description"]
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX_LENGTH:
            raise InvalidInput(fields={"description": [f"Text of at most {DESCRIPTION_MAX_LENGTH} characters."]})
    if "active" in fields and not isinstance(fields["active"], bool):
        raise InvalidInput(fields={"active": ["true or false."]})
    if "max_concurrency" in fields:
        limit = fields["max_concurrency"]
        if not is_whole_number(limit, minimum=1, maximum=MAX_CONCURRENCY):
            raise InvalidInput(fields={"max_concurrency": [f"A whole number from 1 to {MAX_CONCURRENCY}."]})
    return checked


@atomic_with_retry
def endpoint_create(
    *,
    url: str,
    events: list[str],
    description: str = "",
    active: bool = True,
    max_concurrency: int = 2,
    actor=None,
) -> WebhookEndpoint:
    """Register an endpoint with a new signing secret (shown to staff: receivers verify with it).

    Raises InvalidInput (bad URL, unknown or no event types, out-of-range fields)."""
    checked = _check_fields(
        {"url": url, "events": events, "description": description, "active": active, "max_concurrency": max_concurrency}
    )
    return WebhookEndpoint.objects.create(
        **checked, secret=signing.new_secret(), created_by=actor if actor and actor.pk else None
    )


def _missing(endpoint_id: int) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id}.")


@atomic_with_retry
def endpoint_update(*, endpoint_id: int, expected_version: int | None = None, **fields) -> WebhookEndpoint:
    """Change what staff may change, if the endpoint is still at `expected_version` (None: whatever
    version it is at now). The version moves by one.

    Turning an endpoint back on (active false → true) also clears what the delivery engine wrote
    when it switched it off (`disabled_reason`, `consecutive_failures`, `failing_since`), and
    wakes the dispatcher after commit so its waiting deliveries go out.

    Compare-and-set without a row lock: the UPDATE names the version and the `active` it was
    read with, so an engine switching the endpoint off in between (which need not move the
    version) makes it match nothing and the whole service runs again (`Retry`).
    Raises NotFound, VersionConflict (with `current_version`), InvalidInput.
    """
    checked = _check_fields(fields)
    current = WebhookEndpoint.objects.filter(pk=endpoint_id).values("version", "active").first()
    if current is None:
        raise _missing(endpoint_id)
    if expected_version is not None and expected_version != current["version"]:
        raise VersionConflict(extra={"current_version": current["version"]})
    re_enabled = checked.get("active") is True and not current["active"]
    if re_enabled:
        checked.update(disabled_reason="", consecutive_failures=0, failing_since=None)
    updated = WebhookEndpoint.objects.filter(
        pk=endpoint_id, version=current["version"], active=current["active"]
    ).update(**checked, version=F("version") + 1, updated_at=timezone.now())
    if not updated:
        raise Retry()  # changed since the read: read again (a stale expected_version is then refused)
    if re_enabled:
        services.kick()  # publishes after commit
    return WebhookEndpoint.objects.get(pk=endpoint_id)


@atomic_with_retry
def endpoint_rotate_secret(*, endpoint_id: int, expected_version: int | None = None) -> WebhookEndpoint:
    """Give the endpoint a new signing secret; the old one stops at once (every attempt from now
    on, retries of older events too, is signed with the new one). The version moves by one.
    Raises NotFound, VersionConflict."""
    query = WebhookEndpoint.objects.filter(pk=endpoint_id)
    if expected_version is not None:
        query = query.filter(version=expected_version)
    updated = query.update(secret=signing.new_secret(), version=F("version") + 1, updated_at=timezone.now())
    if not updated:
        _refuse_missing_or_stale(endpoint_id)
    return WebhookEndpoint.objects.get(pk=endpoint_id)


@atomic_with_retry
def endpoint_delete(*, endpoint_id: int, expected_version: int | None = None) -> None:
    """Delete the endpoint and its deliveries (one set-based DELETE each; the events stay for the
    other endpoints). An attempt in flight finishes, and its result finds no row to record.
    Raises NotFound, VersionConflict."""
    query = WebhookEndpoint.objects.filter(pk=endpoint_id)
    if expected_version is not None:
        query = query.filter(version=expected_version)
    deleted, _ = query.delete()
    if not deleted:
        _refuse_missing_or_stale(endpoint_id)


def _refuse_missing_or_stale(endpoint_id: int):
    current = WebhookEndpoint.objects.filter(pk=endpoint_id).values_list("version", flat=True).first()
    if current is None:
        raise _missing(endpoint_id)
    raise VersionConflict(extra={"current_version": current})


# --- reads -----------------------------------------------------------------------------------


def endpoint_list() -> QuerySet[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return WebhookEndpoint.objects.order_by("id")


def endpoint_get(*, endpoint_id: int) -> WebhookEndpoint:
    """One endpoint; NotFound if there is none."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise _missing(endpoint_id)
    return endpoint


def delivery_log(*, endpoint_id: int, state: str | None = None) -> QuerySet[WebhookDelivery]:
    """One endpoint's deliveries, newest first (index webhook_delivery_log), with their events;
    `state` narrows it. NotFound if there is no such endpoint."""
    if not WebhookEndpoint.objects.filter(pk=endpoint_id).exists():
        raise _missing(endpoint_id)
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).select_related("event").order_by("-id")
    if state is not None:
        deliveries = deliveries.filter(state=state)
    return deliveries.defer("event__payload")


def delivery_get(*, delivery_id: int) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.select_related("event").defer("event__payload").filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound(f"No webhook delivery {delivery_id}.")
    return delivery
