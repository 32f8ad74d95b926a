import logging
import re

from celery import shared_task

from project.outbox.services import OutboxTask
from project.values import is_whole_number
from users.emails import SEND_PASSWORD_RESET_EMAIL, password_reset_email_send
from users.services import api_keys_purge

logger = logging.getLogger("stockroom.users")
REF = re.compile(r"[0-9a-f]{32}")


@shared_task(name="users.purge_api_keys")
def purge_api_keys(older_than_days: int = 30) -> int:
    """Delete keys revoked or expired more than `older_than_days` ago (retention of keys)."""
    if not is_whole_number(older_than_days, minimum=1):
        logger.error("purge_api_keys refused: older_than_days=%r is not a positive whole number", older_than_days)
        return 0
    purged = api_keys_purge(older_than_days=older_than_days)
    logger.info("purged %d api keys", purged, extra={"purged": purged})
    return purged


@shared_task(name=SEND_PASSWORD_RESET_EMAIL, base=OutboxTask)
def send_password_reset_email(user_id: int, domain: str, use_https: bool, ref: str) -> bool:
    """Email a password-reset link (enqueued by the reset page through the outbox)."""
    if (
        not is_whole_number(user_id, minimum=1)
        or not isinstance(domain, str)
        or not 0 < len(domain) <= 255
        or not isinstance(use_https, bool)
        or not isinstance(ref, str)
        or not REF.fullmatch(ref)
    ):
        logger.error("send_password_reset_email refused: user_id=%r domain=%r use_https=%r", user_id, domain, use_https)
        return False
    sent = password_reset_email_send(user_id=user_id, domain=domain, use_https=use_https, ref=ref)
    if sent:
        logger.info("password reset email sent to user %s", user_id, extra={"user_id": user_id})
    else:
        logger.warning("password reset email not sent: user %s is gone, inactive or without a password", user_id)
    return sent
