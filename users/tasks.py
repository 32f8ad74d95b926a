import logging

from celery import shared_task

from users.services import api_keys_purge

logger = logging.getLogger("stockroom.users")


@shared_task(name="users.purge_api_keys")
def purge_api_keys(older_than_days: int = 30) -> int:
    """Delete keys revoked or expired more than `older_than_days` ago (retention of keys)."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
        logger.error("purge_api_keys refused: older_than_days=%r is not a positive whole number", older_than_days)
        return 0
    purged = api_keys_purge(older_than_days=older_than_days)
    logger.info("purged %d api keys", purged, extra={"purged": purged})
    return purged
