"""Celery tasks of the orders app: validate the arguments, call one service, log the outcome.

Tasks sent through the outbox use project.outbox.OutboxTask (skip a message already done, mark
it done after running). A bad argument is a logged refusal, never a crash or a retry loop.
"""

import logging

from celery import shared_task

from orders.emails import KINDS, SEND_ORDER_EMAIL, order_email_send
from project.outbox import OutboxTask

logger = logging.getLogger("stockroom.orders.tasks")


def _is_id(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value > 0


@shared_task(name=SEND_ORDER_EMAIL, base=OutboxTask)
def send_order_email(order_id: int, kind: str) -> bool:
    """Email the customer about their order (placed, paid, cancelled, expired, fulfilled)."""
    if not _is_id(order_id) or kind not in KINDS:
        logger.error("send_order_email refused: order_id=%r kind=%r", order_id, kind)
        return False
    sent = order_email_send(order_id=order_id, kind=kind)
    if sent:
        logger.info("order email %s sent for order %s", kind, order_id, extra={"order_id": order_id, "kind": kind})
    else:
        logger.warning("order email %s not sent: order %s does not exist", kind, order_id)
    return sent
