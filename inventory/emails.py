"""Staff emails of the inventory app: the low-stock alert.

The hourly job (`services.low_stock_alerts_queue`) queues one alert through the outbox in the
transaction that flags the products; the `inventory.send_low_stock_alert` task sends it, with no
transaction open and a Message-ID that is the same at every delivery (project.outbox.services).

Shoppers' back-in-stock emails travel the same way: the sweep (`back_in_stock.back_in_stock_notify`)
queues one per subscription it ends, and `inventory.send_back_in_stock` sends them, a group at a
time (`back_in_stock_messages`, then project.outbox.services.outbox_send_mails).
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from django.core.mail import EmailMessage, get_connection
from django.urls import reverse

from inventory.models import BackInStockSubscription
from project.outbox.services import outbox_enqueue, outbox_enqueue_many, outbox_send_mail

SEND_LOW_STOCK_ALERT = "inventory.send_low_stock_alert"


def low_stock_alert_enqueue(*, recipients: Sequence[str], lines: Sequence[str]) -> None:
    """Ask for one alert about these products (a line each) once the caller's transaction commits."""
    outbox_enqueue(task=SEND_LOW_STOCK_ALERT, kwargs={"recipients": list(recipients), "lines": list(lines)})


def low_stock_alert_send(*, recipients: Sequence[str], lines: Sequence[str]) -> None:
    """Mail the alert. Reads and locks nothing."""
    outbox_send_mail(
        subject=f"Low stock: {len(lines)} product(s)",
        body="These products are at or below their low-stock threshold:\n\n" + "\n".join(lines),
        recipients=recipients,
    )


# --- back in stock (shoppers) ---------------------------------------------------------------------

SEND_BACK_IN_STOCK = "inventory.send_back_in_stock"


def back_in_stock_enqueue(*, subscription_ids: Sequence[int]) -> int:
    """Ask for one back-in-stock email per subscription once the caller's transaction commits: one
    outbox row each (so each has its own Message-ID and its own retries), written in one statement.
    Returns how many were queued."""
    return outbox_enqueue_many(
        task=SEND_BACK_IN_STOCK, kwargs_list=[{"subscription_id": pk} for pk in subscription_ids]
    )


def _back_in_stock_body(subscription: BackInStockSubscription) -> str:
    product = subscription.product
    return "\n".join(
        [
            "Hello,",
            "",
            f"{product.name} ({product.sku}) is back in stock. You asked us to tell you, so here we are;",
            "this is the only email we send about it.",
            "",
            f"See it in the shop: {reverse('product', args=[product.sku])}",
            "",
            "Units are reserved for you when you check out, not before, so it may sell out again.",
            "",
            "Stockroom",
        ]
    )


def _back_in_stock_email(subscription: BackInStockSubscription) -> tuple[str, str]:
    """The subject and body of a subscription's email."""
    return f"Back in stock: {subscription.product.name}", _back_in_stock_body(subscription)


def back_in_stock_messages(*, requests: Mapping[int, int | None]) -> dict[int, EmailMessage | None]:
    """The email of each request, a subscription id by key (an outbox message id), None where the
    request is None or the subscription no longer exists. Reads the subscriptions (with their
    shopper and product) in one query and composes without sending (outbox_send_mails sends)."""
    subscriptions = BackInStockSubscription.objects.select_related("user", "product").in_bulk(
        [subscription_id for subscription_id in requests.values() if subscription_id is not None]
    )
    emails: dict[int, EmailMessage | None] = {}
    for key, subscription_id in requests.items():
        subscription = subscriptions.get(subscription_id) if subscription_id is not None else None
        if subscription is None:
            emails[key] = None
            continue
        subject, body = _back_in_stock_email(subscription)
        emails[key] = EmailMessage(subject=subject, body=body, to=[subscription.user.email])
    return emails


@contextmanager
def back_in_stock_sender(*, subscription_ids: Sequence[int]) -> Iterator[Callable[[int], bool]]:
    """Read these subscriptions (with their shopper and product) in one query and open one mail
    connection; yields `send(subscription_id)`, which emails that shopper that the product is back
    (False if the subscription no longer exists: its shopper's account was deleted).

    Reads only, locks nothing; runs outside any transaction (OutboxTask), which also makes a
    redelivered message skip, so an email goes out once unless a crash falls between sending and
    recording it, and then again with the same Message-ID."""
    subscriptions = BackInStockSubscription.objects.select_related("user", "product").in_bulk(list(subscription_ids))

    with get_connection() as mail:

        def send(subscription_id: int) -> bool:
            subscription = subscriptions.get(subscription_id)
            if subscription is None:
                return False
            subject, body = _back_in_stock_email(subscription)
            outbox_send_mail(subject=subject, body=body, recipients=[subscription.user.email], connection=mail)
            return True

        yield send


def back_in_stock_send(*, subscription_id: int) -> bool:
    """Mail one back-in-stock email (see back_in_stock_sender); False if there is no such subscription."""
    with back_in_stock_sender(subscription_ids=[subscription_id]) as send:
        return send(subscription_id)
