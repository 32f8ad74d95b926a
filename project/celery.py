"""The Celery app. Tasks take ids, are idempotent, and carry the request id of their cause.

Every Django process creates it (ProjectConfig imports this module), so `shared_task`s bind to it;
`celery -A project.celery` starts workers and beat with it. The platform never imports it: the
outbox relay is handed it through settings.CELERY_APP.
"""

import os
from logging.config import dictConfig

from celery import Celery, signals, states
from django.conf import settings
from django.db import close_old_connections, connections

# Task runs, failures and durations, and the worker's own metrics port: connected at import.
from project.observability import tasks as task_metrics  # noqa: F401
from project.observability.logs import REQUEST_ID_HEADER, clean_request_id, request_id_var

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")

app = Celery("stockroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.before_task_publish.connect
def _attach_request_id(headers=None, **kwargs):
    request_id = request_id_var.get()
    if headers is not None and request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id


@signals.task_prerun.connect
def _restore_request_id(task=None, **kwargs):
    request_id_var.set(clean_request_id(getattr(task.request, REQUEST_ID_HEADER, None)))


@signals.task_postrun.connect
def _forget_request_id(**kwargs):
    request_id_var.set(None)


@signals.task_prerun.connect
def _drop_old_connections(**kwargs):
    """Worker processes keep their database connections between tasks, as Django keeps them
    between requests (CONN_MAX_AGE, checked with CONN_HEALTH_CHECKS): at a task's start, drop
    the ones past their age or broken, as at a request's start."""
    close_old_connections()


@signals.task_postrun.connect
def _drop_connections_of_a_failed_task(state=None, **kwargs):
    """A task that failed (a time limit can interrupt a query) leaves no connection behind."""
    if state != states.SUCCESS:
        connections.close_all()


@signals.setup_logging.connect
def _use_django_logging(**kwargs):
    """Workers log JSON lines through Django's LOGGING instead of Celery's own format."""
    dictConfig(settings.LOGGING)
