"""Celery tasks of the orders app: validate the arguments, call one service, log the outcome.

Tasks sent through the outbox use project.outbox.services.OutboxTask (claim the message, run with no
transaction or lock held, mark it done). A bad argument is a logged refusal, never a crash or a retry loop.
"""

import logging
from datetime import date

from celery import shared_task
from django.conf import settings

from orders import jobs
from orders.backorders import fill_waiting_backorders
from orders.emails import KINDS, SEND_ORDER_EMAIL, order_email_messages, order_emails_sender
from project.errors import InvalidInput
from project.outbox.services import ClaimedMessage, OutboxBatch, OutboxTask, outbox_send_mails
from project.values import is_whole_number

logger = logging.getLogger("stockroom.orders.tasks")


def _is_id(value) -> bool:
    return is_whole_number(value, minimum=1)


def _email_arguments(order_id, kind) -> tuple[int, str]:
    return order_id, kind


def _email_valid(order_id, kind) -> bool:
    if _is_id(order_id) and kind in KINDS:
        return True
    logger.error("send_order_email refused: order_id=%r kind=%r", order_id, kind)
    return False


def _email_request(message: ClaimedMessage) -> tuple[int, str] | None:
    """The (order id, kind) of an order email message, or None (logged) if its arguments are bad."""
    try:
        order_id, kind = _email_arguments(*message.args, **message.kwargs)
    except TypeError:
        logger.error("send_order_email refused: arguments %.200r %.200r", message.args, message.kwargs)
        return None
    return (order_id, kind) if _email_valid(order_id, kind) else None


def _log_email(sent: bool, order_id: int, kind: str) -> None:
    if sent:
        logger.info("order email %s sent for order %s", kind, order_id, extra={"order_id": order_id, "kind": kind})
    else:
        logger.warning("order email %s not sent: order %s does not exist", kind, order_id)


class OrderEmailTask(OutboxTask):
    """Order emails go out in groups: the relay hands a worker up to `outbox_batch_size` of them in
    one Celery message, their orders are read in one go and they share one SMTP conversation,
    pipelined (outbox_send_mails)."""

    outbox_batch_size = 100

    def run_batch(self, batch: OutboxBatch) -> None:
        requests = {message.pk: _email_request(message) for message in batch.messages}
        for message, sent in outbox_send_mails(batch, order_email_messages(requests=requests)):
            request = requests[message.pk]
            if request is not None:
                _log_email(sent, *request)


@shared_task(name=SEND_ORDER_EMAIL, base=OrderEmailTask)
def send_order_email(order_id: int, kind: str) -> bool:
    """Email the customer about their order (placed, paid, cancelled, expired, fulfilled)."""
    if not _email_valid(order_id, kind):
        return False
    with order_emails_sender(order_ids=[order_id]) as send:
        sent = send(order_id, kind)
    _log_email(sent, order_id, kind)
    return sent


@shared_task(name="orders.expire_reservations")
def expire_reservations() -> int:
    """Every minute: release the stock of unpaid reservations whose time ran out."""
    expired = jobs.expire_reservations()
    logger.info("expired %d reservations", expired, extra={"expired": expired})
    return expired


@shared_task(name="orders.fill_backorders")
def fill_backorders() -> int:
    """Fill backorders left waiting beside free units (the arrivals fill theirs at once)."""
    return fill_waiting_backorders()


@shared_task(name=jobs.BULK_FULFIL_TASK, base=OutboxTask)
def bulk_fulfil(order_ids: list[int], run_id: int | None = None) -> dict:
    """Fulfil the paid orders among `order_ids`; report those locked, not paid or missing."""
    if run_id is not None and not _is_id(run_id):
        logger.error("bulk_fulfil refused: run_id=%r is not an id", run_id)
        return {}
    try:
        run = jobs.bulk_fulfil(order_ids=order_ids, run_id=run_id)
    except InvalidInput as exc:
        logger.error("bulk_fulfil refused: %s %s", exc.detail, exc.fields)
        return {}
    return {"run_id": run.pk, "fulfilled": run.fulfilled, "locked": run.locked, "not_paid": run.not_paid}


@shared_task(name="orders.daily_sales_report")
def daily_sales_report(day: str | None = None) -> int | None:
    """Yesterday's sales (or `day`, YYYY-MM-DD) as CSV for staff, the day taken in TIME_ZONE."""
    if day is None:
        wanted = jobs.yesterday()
    else:
        try:
            wanted = date.fromisoformat(day)
        except (TypeError, ValueError):
            logger.error("daily_sales_report refused: day=%r is not YYYY-MM-DD", day)
            return None
    report = jobs.sales_report_generate(day=wanted)
    logger.info("sales report for %s: %d orders", wanted, report.orders, extra={"report_id": report.pk})
    return report.pk


@shared_task(name="orders.prune_idempotency_keys")
def prune_idempotency_keys() -> int:
    """Hourly: forget idempotency keys older than IDEMPOTENCY_KEEP_HOURS."""
    pruned = jobs.idempotency_keys_prune(older_than_hours=settings.IDEMPOTENCY_KEEP_HOURS)
    logger.info("pruned %d idempotency keys", pruned, extra={"pruned": pruned})
    return pruned


@shared_task(name="orders.reconcile_stock")
def reconcile_stock() -> int | None:
    """Nightly and on demand: check every stock invariant in one snapshot; record each breach."""
    run = jobs.reconcile_stock()
    return run.pk if run is not None else None
