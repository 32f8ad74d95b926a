"""The outbox's housekeeping task (registered by the wiring's project/tasks.py, which imports it)."""

import logging

from celery import shared_task
from django.conf import settings

from project.errors import InvalidInput
from project.outbox.services import outbox_prune

logger = logging.getLogger("stockroom.outbox")


@shared_task(name="project.prune_outbox")
def prune_outbox(older_than_days: int | None = None) -> int:
    """Daily: delete outbox messages done more than OUTBOX_KEEP_DAYS ago (dead ones stay)."""
    days = settings.OUTBOX_KEEP_DAYS if older_than_days is None else older_than_days
    try:
        pruned = outbox_prune(older_than_days=days)
    except InvalidInput as exc:
        logger.error("prune_outbox refused: %s", exc.fields)
        return 0
    logger.info("pruned %d outbox messages", pruned, extra={"pruned": pruned})
    return pruned
