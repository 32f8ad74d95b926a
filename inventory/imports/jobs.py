"""The import job row: create and queue it, read it, hold it for one transaction of a run."""

import uuid

from django.conf import settings
from django.core.files import File
from django.db import transaction

from inventory.models import ImportJob
from project.db.transactions import raise_statement_timeout
from project.errors import NotFound
from project.outbox.services import outbox_enqueue

Status = ImportJob.Status
IMPORT_TASK = "inventory.import_stock"
MAX_ERRORS = 1000


class ImportBusy(Exception):
    """Another run of the same import (a second delivery of its task) holds the job row right now.
    Nothing was changed; try again in a moment."""


# --- reads -------------------------------------------------------------------------------------


def import_detail(*, import_id: int) -> ImportJob:
    job = ImportJob.objects.filter(pk=import_id).first()
    if job is None:
        raise NotFound(f"No import {import_id}.")
    return job


# --- upload ------------------------------------------------------------------------------------


def import_create(*, upload: File, actor=None) -> ImportJob:
    """Store the uploaded file under MEDIA_ROOT/imports/ and queue its import.

    The job and its outbox message commit together (the relay publishes the task), so a broker
    outage delays the import but never loses it. The content is not read here: the worker
    checks it and reports every problem on the job.
    """
    storage = ImportJob._meta.get_field("file").storage
    name = storage.save(f"imports/{uuid.uuid4().hex}.csv", upload)
    with transaction.atomic():
        job = ImportJob.objects.create(file=name, original_name=(upload.name or "")[:255], created_by=actor)
        outbox_enqueue(task=IMPORT_TASK, args=[job.pk])
    return job


def import_enqueue(*, import_id: int) -> bool:
    """Queue an unfinished import again (staff, when its task was lost). Harmless if it is running:
    the second run waits for the first. False if the import is finished or does not exist."""
    with transaction.atomic():
        if not ImportJob.objects.filter(pk=import_id, status__in=[Status.QUEUED, Status.RUNNING]).exists():
            return False
        outbox_enqueue(task=IMPORT_TASK, args=[import_id])
    return True


# --- one transaction of a run ------------------------------------------------------------------


def raise_timeouts() -> None:
    """A batch transaction may run longer than a request's statement_timeout."""
    raise_statement_timeout(settings.IMPORT_STATEMENT_TIMEOUT_MS)


def lock_job(import_id: int) -> ImportJob:
    """This run's hold on its job for one transaction; ImportBusy if another run holds it."""
    job = ImportJob.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=import_id).first()
    if job is None:
        if ImportJob.objects.filter(pk=import_id).exists():
            raise ImportBusy(f"import {import_id} is being worked on by another run")
        raise NotFound(f"No import {import_id}.")
    return job
