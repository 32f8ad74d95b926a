"""Staff emails of the inventory app: the low-stock alert.

The hourly job (`services.low_stock_alerts_queue`) queues one alert through the outbox in the
transaction that flags the products; the `inventory.send_low_stock_alert` task sends it, with no
transaction open and a Message-ID that is the same at every delivery (project.outbox.services).
"""

from collections.abc import Sequence

from project.outbox.services import outbox_enqueue, outbox_send_mail

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
