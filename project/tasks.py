"""The `project` app's Celery tasks (Celery's autodiscovery imports this module): housekeeping
and the webhook tasks."""

from importlib import import_module

from celery import shared_task
from django.conf import settings

from project.outbox.tasks import prune_outbox
from project.webhooks.tasks import deliver, dispatch, prune, send_endpoint_disabled_email, tick

__all__ = ["clear_sessions", "deliver", "dispatch", "prune", "prune_outbox", "send_endpoint_disabled_email", "tick"]


@shared_task(name="project.clear_sessions")
def clear_sessions() -> None:
    """Daily: delete expired sessions (`manage.py clearsessions`); every anonymous cart makes one."""
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
