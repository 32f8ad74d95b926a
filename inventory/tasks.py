import logging

from celery import shared_task
from django.conf import settings

from inventory.services import low_stock_alerts_send

logger = logging.getLogger("stockroom.inventory")


@shared_task(name="inventory.low_stock_alerts")
def low_stock_alerts() -> int:
    """Hourly: one alert per product per crossing below its threshold, to STAFF_ALERT_EMAILS."""
    alerted = low_stock_alerts_send(recipients=settings.STAFF_ALERT_EMAILS)
    logger.info("low-stock alerts sent for %d products", len(alerted), extra={"skus": alerted[:50]})
    return len(alerted)
