"""What an order's change sets off, written in the change's own transaction: the customer's email
(orders.emails, through the outbox) and the webhook event (orders/events.sql).

Every service that moves an order calls `order_event` once the order row holds its new state;
orders_place_order and orders_expire_chunk do the same in SQL. A rolled-back change leaves
neither, and a committed one has both.
"""

from django.db import connection

from orders.emails import KINDS as EMAIL_KINDS
from orders.emails import order_email_enqueue
from orders.models import Order
from project.db.transactions import require_transaction
from project.webhooks.services import kick

# The webhook event types of orders; registered with the platform in orders.apps.
EVENT_TYPES = {
    "order.placed": "An order was placed: its units are reserved (or backordered) until it is paid or expires.",
    "order.paid": "An order was paid.",
    "order.cancelled": "An order was cancelled and its stock released.",
    "order.expired": "An unpaid order's time to pay ran out and its stock was released.",
    "order.shipped": "A shipment of an order left the warehouse; more is still to come.",
    "order.fulfilled": "The last of an order left the warehouse.",
    "order.returned": "Returned units of an order were received (the order may be partly returned).",
}


def order_event(order: Order, kind: str) -> None:
    """Email the customer (if this kind has an email) and emit `order.<kind>` to the webhook
    endpoints that want it, with the order as it now stands."""
    require_transaction("order_event")
    event_type = f"order.{kind}"
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown order event {kind!r}")
    if kind in EMAIL_KINDS:
        order_email_enqueue(order_id=order.pk, kind=kind)
    with connection.cursor() as cursor:
        cursor.execute("SELECT orders_webhook_emit(%s, %s)", [event_type, [order.pk]])
        written = cursor.fetchone()[0]
    if written:
        kick()  # the dispatcher runs once this transaction commits
