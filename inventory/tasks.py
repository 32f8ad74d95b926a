import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from inventory import imports
from inventory.back_in_stock import back_in_stock_notify
from inventory.bulk import bulk_stock_requests_prune
from inventory.emails import (
    SEND_BACK_IN_STOCK,
    SEND_LOW_STOCK_ALERT,
    back_in_stock_messages,
    back_in_stock_send,
    low_stock_alert_send,
)
from inventory.errors import InvalidInput
from inventory.events import stock_changed_emit
from inventory.reorder import reorder_proposals_draft
from inventory.services import import_files_prune, low_stock_alerts_queue
from project.errors import LockTimeout, NotFound
from project.outbox.services import OutboxBatch, OutboxTask, outbox_send_mails
from project.values import is_whole_number

logger = logging.getLogger("stockroom.inventory")


@shared_task(name="inventory.low_stock_alerts")
def low_stock_alerts() -> int:
    """Hourly: one alert per product per crossing below its threshold, to STAFF_ALERT_EMAILS
    (queued through the outbox, sent by send_low_stock_alert)."""
    alerted = low_stock_alerts_queue(recipients=settings.STAFF_ALERT_EMAILS)
    logger.info("low-stock alert queued for %d products", len(alerted), extra={"skus": alerted[:50]})
    return len(alerted)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@shared_task(name=SEND_LOW_STOCK_ALERT, base=OutboxTask)
def send_low_stock_alert(recipients: list[str], lines: list[str]) -> int:
    """Mail one low-stock alert to staff; returns the products it names (0: refused)."""
    if not _strings(recipients) or not _strings(lines) or not recipients or not lines:
        logger.error("send_low_stock_alert refused: recipients and lines must be lists of text")
        return 0
    low_stock_alert_send(recipients=recipients, lines=lines)
    logger.info("low-stock alert sent for %d products", len(lines))
    return len(lines)


# The longest task allowed (a million-row import); the broker's visibility timeout stays above it.
IMPORT_SOFT_LIMIT = settings.CELERY_LONGEST_TASK_SECONDS
# A second delivery of an import's task (a redelivery after a crash, while the dead run's database
# session is still being cleaned up, or the relay's lease running out) waits this long for the job.
IMPORT_JOB_BUSY_WAITS = 30
IMPORT_JOB_BUSY_WAIT_SECONDS = 1.0


@shared_task(
    name="inventory.import_stock",
    base=OutboxTask,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=IMPORT_SOFT_LIMIT,
    time_limit=IMPORT_SOFT_LIMIT + 60,
)
def import_stock(import_id) -> str | None:
    """Run or resume a stock import (inventory.imports.import_run); sent through the outbox.

    Idempotent: a finished import is left alone, a resumed one skips the chunks it applied; a
    killed worker's task is delivered again (acks_late, reject_on_worker_lost) and resumes. An
    import waiting for a warehouse returns; the import holding it queues it again. Lock timeouts
    and a lost database connection raise, and the outbox publishes the task again with backoff.
    """
    if not is_whole_number(import_id, minimum=1):
        logger.error("import_stock refused the argument %r: an import id is a positive integer", import_id)
        return None
    try:
        for wait in range(IMPORT_JOB_BUSY_WAITS + 1):
            try:
                job = imports.import_run(import_id=import_id)
                break
            except imports.ImportBusy:
                if wait == IMPORT_JOB_BUSY_WAITS:
                    raise
                time.sleep(IMPORT_JOB_BUSY_WAIT_SECONDS)
    except NotFound:
        logger.warning("import_stock: no import %s", import_id)
        return None
    except imports.ImportWaiting as waiting:
        logger.info("%s", waiting, extra={"import_id": import_id})
        return "waiting"
    except (imports.ImportBusy, LockTimeout, OperationalError, InterfaceError) as exc:
        logger.warning("import %s will be tried again: %s", import_id, exc, extra={"import_id": import_id})
        close_old_connections()
        raise
    except SoftTimeLimitExceeded:
        imports.import_fail(import_id=import_id, message="The import took longer than the time limit.")
        return imports.Status.FAILED
    except Exception as exc:
        logger.exception("import %s failed", import_id)
        imports.import_fail(import_id=import_id, message=f"Internal error ({type(exc).__name__}).")
        return imports.Status.FAILED
    return job.status


@shared_task(name="inventory.prune_import_files")
def prune_import_files(older_than_days: int | None = None) -> int:
    """Daily: delete uploaded import files left over for more than IMPORT_FILES_KEEP_DAYS (a finished
    import deletes its own; these are what a crash or an unsaved upload left behind)."""
    days = settings.IMPORT_FILES_KEEP_DAYS if older_than_days is None else older_than_days
    try:
        pruned = import_files_prune(older_than_days=days)
    except InvalidInput as exc:
        logger.error("prune_import_files refused: %s", exc.fields)
        return 0
    logger.info("pruned %d import files", pruned, extra={"pruned": pruned})
    # The same daily housekeeping forgets the bulk stock requests' idempotency keys (inventory.bulk).
    keys = bulk_stock_requests_prune(older_than_hours=settings.IDEMPOTENCY_KEEP_HOURS)
    logger.info("pruned %d bulk stock request keys", keys, extra={"pruned": keys})
    return pruned


# --- webhooks --------------------------------------------------------------------------------------


@shared_task(name="inventory.stock_changed_events")
def stock_changed_events() -> int:
    """Every few seconds: one `stock.changed` webhook event per level the ledger shows changed since
    the last run (inventory.events.stock_changed_emit). Singleton; nothing to do costs two queries."""
    emitted = stock_changed_emit()
    if emitted:
        logger.info("stock.changed events emitted for %d levels", emitted, extra={"levels": emitted})
    return emitted


# --- back in stock (shoppers) ---------------------------------------------------------------------


@shared_task(name="inventory.back_in_stock_sweep")
def back_in_stock_sweep() -> int:
    """Every 30 seconds: end the subscriptions of products that can be bought again, queueing one
    email each through the outbox (inventory.back_in_stock.back_in_stock_notify). Safe to run
    twice at once (SKIP LOCKED); what is over one run's limit waits for the next."""
    notified = back_in_stock_notify()
    if notified:
        logger.info("back-in-stock emails queued for %d subscriptions", notified, extra={"notified": notified})
    return notified


def _back_in_stock_argument(subscription_id):
    return subscription_id


def _back_in_stock_valid(subscription_id) -> bool:
    if is_whole_number(subscription_id, minimum=1):
        return True
    logger.error("send_back_in_stock refused: subscription_id=%.100r is not a positive integer", subscription_id)
    return False


def _log_back_in_stock(sent: bool, subscription_id: int) -> None:
    if sent:
        logger.info("back-in-stock email sent", extra={"subscription_id": subscription_id})
    else:
        logger.warning("back-in-stock email not sent: subscription %s no longer exists", subscription_id)


class BackInStockEmailTask(OutboxTask):
    """A restock can end hundreds of subscriptions in one sweep: the relay hands a worker up to
    `outbox_batch_size` of their emails in one Celery message, read in one query and sent over one
    SMTP conversation, pipelined (outbox_send_mails, as order emails are)."""

    outbox_batch_size = 50

    def run_batch(self, batch: OutboxBatch) -> None:
        ids: dict[int, int | None] = {}
        for message in batch.messages:
            try:
                subscription_id = _back_in_stock_argument(*message.args, **message.kwargs)
            except TypeError:
                logger.error("send_back_in_stock refused: arguments %.200r %.200r", message.args, message.kwargs)
                ids[message.pk] = None
                continue
            ids[message.pk] = subscription_id if _back_in_stock_valid(subscription_id) else None
        for message, sent in outbox_send_mails(batch, back_in_stock_messages(requests=ids)):
            if ids[message.pk] is not None:
                _log_back_in_stock(sent, ids[message.pk])


@shared_task(name=SEND_BACK_IN_STOCK, base=BackInStockEmailTask)
def send_back_in_stock(subscription_id) -> bool:
    """Email a shopper that the product they waited for is back; False if refused or gone."""
    if not _back_in_stock_valid(subscription_id):
        return False
    sent = back_in_stock_send(subscription_id=subscription_id)
    _log_back_in_stock(sent, subscription_id)
    return sent


@shared_task(name="inventory.draft_reorder_purchase_orders")
def draft_reorder_purchase_orders() -> int:
    """Hourly: draft purchase orders for the levels below their reorder point (inventory.reorder),
    one per warehouse, for staff to confirm; returns how many were drafted. A run while another
    is still going drafts nothing (singleton); a lock timeout raises and the next hour tries again."""
    drafts = reorder_proposals_draft()
    logger.info(
        "reorder job drafted %d purchase orders", len(drafts), extra={"purchase_orders": [d.pk for d in drafts][:50]}
    )
    return len(drafts)
