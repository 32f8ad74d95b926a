"""The webhook tasks. `webhooks.dispatch` and `webhooks.deliver` run on their own queue
(settings.WEBHOOK_QUEUE, routed by CELERY_TASK_ROUTES), consumed only by bin/webhooks (a threads
pool: an attempt waits on the network, not the CPU); bin/worker never takes them, so a slow
receiver never holds up order emails or imports. The staff email about an endpoint switched off
is an ordinary outbox task on the default queue.

Registered by the wiring's project/tasks.py, which imports this module. A bad argument is a logged
refusal, never a crash or a retry loop.
"""

import logging

from celery import shared_task
from django.conf import settings

from project.errors import InvalidInput
from project.outbox.services import OutboxTask
from project.values import is_whole_number
from project.webhooks import delivery, services

logger = logging.getLogger("stockroom.webhooks")


@shared_task(name=services.DISPATCH_TASK, ignore_result=True)
def dispatch() -> int:
    """Beat (every WEBHOOK_DISPATCH_SECONDS), emits and finished attempts: hand out what is due,
    one `webhooks.deliver` per delivery. A publish that fails takes its hand-out mark back."""
    handed_out = delivery.dispatch_round()
    for position, delivery_id in enumerate(handed_out):
        try:
            deliver.apply_async(args=[delivery_id], retry=False)
        except Exception as exc:
            logger.warning("webhook deliveries not published (%s: %s); the next round hands them out", type(exc), exc)
            for left in handed_out[position:]:
                services.delivery_release(delivery_id=left)
            return position
    return len(handed_out)


@shared_task(name="webhooks.tick", ignore_result=True)
def tick() -> bool:
    """Beat, every WEBHOOK_DISPATCH_SECONDS, on the default queue (bin/worker): publish the
    dispatcher only when a delivery is due (retries falling due, claims of a dead worker run out).
    So a shop without endpoints, or one not running bin/webhooks, never fills the webhooks queue
    with dispatcher messages no one takes."""
    if not services.deliveries_due():
        return False
    services.kick()
    return True


@shared_task(name=services.DELIVER_TASK, ignore_result=True)
def deliver(delivery_id: int) -> str:
    """Make one attempt of a delivery, then of its endpoint's next due ones, up to
    WEBHOOK_DELIVER_CHAIN (project.webhooks.delivery.deliver_chain): a backlog to one endpoint flows
    without a message per delivery. A chain that stopped at its limit kicks the dispatcher."""
    if not is_whole_number(delivery_id, minimum=1):
        logger.error("webhooks.deliver refused: delivery_id=%.100r is not an id", delivery_id)
        return "refused"
    outcomes, more = delivery.deliver_chain(delivery_id, limit=settings.WEBHOOK_DELIVER_CHAIN)
    if more:
        services.kick()
    return outcomes[0]


@shared_task(name=services.ENDPOINT_DISABLED_EMAIL_TASK, base=OutboxTask)
def send_endpoint_disabled_email(
    recipients: list[str], endpoint_id: int, url: str, reason: str, last_error: str = ""
) -> bool:
    """Mail staff that a webhook endpoint was switched off for failing too long."""
    if (
        not isinstance(recipients, list)
        or not all(isinstance(address, str) for address in recipients)
        or not is_whole_number(endpoint_id, minimum=1)
        or not all(isinstance(text, str) for text in (url, reason, last_error))
    ):
        logger.error("send_endpoint_disabled_email refused: bad arguments for endpoint %.50r", endpoint_id)
        return False
    services.endpoint_disabled_email_send(
        recipients=recipients, endpoint_id=endpoint_id, url=url, reason=reason, last_error=last_error
    )
    return True


@shared_task(name="webhooks.prune", ignore_result=True)
def prune(older_than_days: int | None = None) -> int:
    """Daily, on the default queue: delete deliveries finished more than WEBHOOK_KEEP_DAYS ago and
    the events left without deliveries (services.webhooks_prune)."""
    days = settings.WEBHOOK_KEEP_DAYS if older_than_days is None else older_than_days
    try:
        deliveries, events = services.webhooks_prune(older_than_days=days)
    except InvalidInput as exc:
        logger.error("webhooks.prune refused: %s", exc.fields)
        return 0
    logger.info("pruned %d webhook deliveries and %d events", deliveries, events)
    return deliveries + events
