"""The periodic jobs, written into django-celery-beat's tables by `manage.py setup_schedules`.

Idempotent: an existing schedule keeps the timing staff may have edited in the admin.
"""

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

# name: (task, kind, spec, kwargs as JSON)
SCHEDULES: dict[str, tuple[str, str, dict, str]] = {
    "low stock alerts": ("inventory.low_stock_alerts", "crontab", {"minute": "5"}, "{}"),
    "purge old api keys": ("users.purge_api_keys", "crontab", {"minute": "17", "hour": "3"}, '{"older_than_days": 30}'),
    "expire reservations": ("orders.expire_reservations", "interval", {"every": 1, "period": "minutes"}, "{}"),
    "fill backorders": ("orders.fill_backorders", "interval", {"every": 1, "period": "minutes"}, "{}"),
    "reconcile stock": ("orders.reconcile_stock", "crontab", {"minute": "30", "hour": "2"}, "{}"),
    "daily sales report": ("orders.daily_sales_report", "crontab", {"minute": "10", "hour": "0"}, "{}"),
    "prune idempotency keys": ("orders.prune_idempotency_keys", "crontab", {"minute": "40"}, "{}"),
    "prune outbox": ("project.prune_outbox", "crontab", {"minute": "50", "hour": "3"}, "{}"),
    "clear expired sessions": ("project.clear_sessions", "crontab", {"minute": "20", "hour": "4"}, "{}"),
    "prune import files": ("inventory.prune_import_files", "crontab", {"minute": "35", "hour": "4"}, "{}"),
    "back in stock emails": ("inventory.back_in_stock_sweep", "interval", {"every": 30, "period": "seconds"}, "{}"),
    "reorder proposals": ("inventory.draft_reorder_purchase_orders", "crontab", {"minute": "25"}, "{}"),
    # Emits kick the dispatcher; this tick (default queue) kicks it when retries fall due.
    "webhook dispatcher": (
        "webhooks.tick",
        "interval",
        {"every": settings.WEBHOOK_DISPATCH_SECONDS, "period": "seconds"},
        "{}",
    ),
    # stock.changed: one event per level changed in each window (inventory.events).
    "stock changed events": (
        "inventory.stock_changed_events",
        "interval",
        {"every": settings.WEBHOOK_STOCK_CHANGED_SECONDS, "period": "seconds"},
        "{}",
    ),
    "prune webhooks": ("webhooks.prune", "crontab", {"minute": "55", "hour": "3"}, "{}"),
}


def schedules_ensure() -> list[str]:
    created = []
    with transaction.atomic():
        for name, (task, kind, spec, kwargs) in SCHEDULES.items():
            if PeriodicTask.objects.filter(name=name).exists():
                continue
            if kind == "crontab":
                timing = {"crontab": CrontabSchedule.objects.get_or_create(**spec)[0]}
            else:
                timing = {"interval": IntervalSchedule.objects.get_or_create(**spec)[0]}
            PeriodicTask.objects.create(name=name, task=task, kwargs=kwargs, **timing)
            created.append(name)
    return created
