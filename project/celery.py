"""The Celery app. Tasks take ids, are idempotent, and carry the request id of their cause."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")

app = Celery("stockroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "request_id"


@signals.before_task_publish.connect
def _attach_request_id(headers=None, **kwargs):
    from project.logs import request_id_var

    request_id = request_id_var.get()
    if headers is not None and request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id


@signals.task_prerun.connect
def _restore_request_id(task=None, **kwargs):
    from project.logs import clean_request_id, request_id_var

    request_id_var.set(clean_request_id(getattr(task.request, REQUEST_ID_HEADER, None)))


@signals.task_postrun.connect
def _forget_request_id(**kwargs):
    from project.logs import request_id_var

    request_id_var.set(None)


@signals.setup_logging.connect
def _use_django_logging(**kwargs):
    """Workers log JSON lines through Django's LOGGING instead of Celery's own format."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# Task runs, failures and durations, and the worker's own metrics port (project.task_metrics).
from project import task_metrics  # noqa: E402, F401
