"""Order emails: enqueued through the outbox inside the order's transaction, sent by a task.

`order_email_enqueue` is what the order services call; the `orders.send_order_email` task sends
a group of them at a time: `order_email_messages` composes the group's emails from one read of
their orders and project.outbox.services.outbox_send_mails sends them over one connection (one
alone goes through `order_emails_sender`). Django's email backend sends (console
in development, SMTP in production), with a Message-ID that is the same at every delivery of the
outbox message (outbox_send_mail).
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.utils import timezone

from orders.selectors import OrderEmailFacts, order_email_facts
from project.outbox.services import outbox_enqueue, outbox_send_mail

SEND_ORDER_EMAIL = "orders.send_order_email"

SUBJECTS = {
    "placed": "Order {number}: reserved for you",
    "paid": "Order {number}: payment received",
    "cancelled": "Order {number}: cancelled",
    "expired": "Order {number}: reservation expired",
    "shipped": "Order {number}: a parcel is on its way",
    "fulfilled": "Order {number}: on its way",
}
KINDS = frozenset(SUBJECTS)


def order_email_enqueue(*, order_id: int, kind: str) -> None:
    """Ask for an email about this order once the caller's transaction commits (outbox)."""
    if kind not in KINDS:
        raise ValueError(f"unknown order email kind {kind!r}")
    outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": order_id, "kind": kind})


def _body(order: OrderEmailFacts, kind: str) -> str:
    lines = [f"Hello {order.shipping_name},", ""]
    if kind == "placed":
        minutes = settings.ORDER_RESERVATION_MINUTES
        lines.append(
            f"we have reserved your order {order.number} ({order.total} {order.currency}). "
            f"Please pay within {minutes} minutes, by {timezone.localtime(order.expires_at):%Y-%m-%d %H:%M %Z}, "
            "to keep it."
        )
    elif kind == "paid":
        lines.append(f"we received {order.paid_amount} {order.currency} for order {order.number}. Thank you!")
    elif kind == "cancelled":
        lines.append(f"order {order.number} is cancelled. Any payment is refunded.")
    elif kind == "expired":
        lines.append(f"the time to pay for order {order.number} ran out, so its items were released.")
    elif kind == "shipped":
        lines.append(
            f"part of order {order.number} has left our warehouse for {order.shipping_city}, "
            f"{order.shipping_country}. Your order page shows each parcel with its tracking number, "
            "and what is still to come."
        )
    elif kind == "fulfilled":
        lines.append(
            f"order {order.number} has left our warehouse for {order.shipping_city}, {order.shipping_country}."
        )
    lines += ["", "Items:"]
    lines += [f"  {quantity} x {name} ({sku})" for quantity, name, sku in order.lines]
    lines += ["", "Stockroom"]
    return "\n".join(lines)


def _email(order: OrderEmailFacts, kind: str) -> tuple[str, str]:
    """The subject and body of an order's `kind` email."""
    return SUBJECTS[kind].format(number=order.number), _body(order, kind)


def order_email_messages(*, requests: Mapping[int, tuple[int, str] | None]) -> dict[int, EmailMessage | None]:
    """The email of each request, an (order id, kind) by key (an outbox message id), None where
    the request is None or its order no longer exists. Reads the orders in one query
    (order_email_facts); reads only, and composes without sending (outbox_send_mails sends)."""
    orders = order_email_facts(order_ids=[request[0] for request in requests.values() if request is not None])
    emails: dict[int, EmailMessage | None] = {}
    for key, request in requests.items():
        order = orders.get(request[0]) if request is not None else None
        if order is None:
            emails[key] = None
            continue
        subject, body = _email(order, request[1])
        emails[key] = EmailMessage(subject=subject, body=body, to=[order.email])
    return emails


@contextmanager
def order_emails_sender(*, order_ids: Iterable[int]) -> Iterator[Callable[[int, str], bool]]:
    """Read these orders in one go (order_email_facts) and open one mail connection; yields
    `send(order_id, kind)`, which emails the `kind` message of one of them to its customer (False
    if the order no longer exists). A batch of emails costs one query and one SMTP connection,
    not a query and a connection each.

    Reads only; locks nothing, and runs outside any transaction (OutboxTask). Not idempotent by
    itself: the outbox task around it makes a redelivered message skip, so a message's email goes
    out once unless a crash falls between sending and recording it; then it goes out again with
    the same Message-ID.
    """
    orders = order_email_facts(order_ids=list(order_ids))

    with get_connection() as mail:

        def send(order_id: int, kind: str) -> bool:
            order = orders.get(order_id)
            if order is None:
                return False
            subject, body = _email(order, kind)
            outbox_send_mail(subject=subject, body=body, recipients=[order.email], connection=mail)
            return True

        yield send
