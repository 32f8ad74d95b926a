"""An import's run: stage, claim the warehouses, apply every chunk, finish; or end it as failed.

Claim (step 2): the import's warehouses are claimed through the partial unique index on
`ImportWarehouse(running)`: one running import per warehouse, across all its chunks. While another
import holds one of them, this one stays queued; the holder queues it again (through the outbox)
when it releases the warehouse. Finish (step 4): status `succeeded`, `partial` (some rows failed)
or `failed` (none applied), the warehouses released; then the staging rows are dropped.
"""

import logging
import time

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory.imports.apply import apply_next_chunk
from inventory.imports.jobs import IMPORT_TASK, MAX_ERRORS, Status, import_detail, lock_job
from inventory.imports.parse import FileError
from inventory.imports.stage import drop_staging, stage_file, staging_lost
from inventory.models import ImportJob, ImportWarehouse
from inventory.services import import_file_delete
from project.outbox.services import outbox_enqueue

logger = logging.getLogger("stockroom.inventory.imports")

JOB_LOCK_WAIT_MS = 60_000


class ImportWaiting(Exception):
    """Another import holds one of this import's warehouses. Nothing was changed; the job stays
    queued and the holder queues it again when it finishes (releasing the warehouse)."""


# --- step 2: claim the warehouses ----------------------------------------------------------------


def claim_warehouses(import_id: int) -> None:
    """Hold the import's warehouses (ImportWarehouse.running) or raise ImportWaiting.

    The partial unique index allows one running claim per warehouse. Claims are taken one by one
    in warehouse id order, so two imports claiming overlapping sets wait in the same order.
    """
    try:
        with transaction.atomic():
            job = lock_job(import_id)
            if job.status == Status.RUNNING:
                return  # a resumed run: the claims are still ours
            for scope_id in (
                ImportWarehouse.objects.filter(job=job).order_by("warehouse_id").values_list("pk", flat=True)
            ):
                ImportWarehouse.objects.filter(pk=scope_id).update(running=True)
            ImportJob.objects.filter(pk=import_id).update(status=Status.RUNNING, started_at=timezone.now())
    except IntegrityError:
        holders = (
            ImportWarehouse.objects.filter(
                running=True, warehouse__in=ImportWarehouse.objects.filter(job_id=import_id).values("warehouse")
            )
            .exclude(job_id=import_id)
            .values_list("job_id", "warehouse__code")
        )
        held = ", ".join(f"{code} (import {job_id})" for job_id, code in holders) or "a warehouse"
        raise ImportWaiting(f"import {import_id} waits for {held}") from None


# --- step 4: finish ------------------------------------------------------------------------------


def _release_and_wake_waiting(import_id: int) -> None:
    """Release the import's warehouses and queue again the imports that wait for one of them.

    In the finishing transaction, after the release: an import that found a warehouse held
    (ImportWaiting) had committed its warehouses before trying, and tried before this release,
    so it is seen here. One that tries after the release gets the warehouse itself; the extra
    message is then harmless (a second run of a running import waits, of a finished one does
    nothing).
    """
    ImportWarehouse.objects.filter(job_id=import_id, running=True).update(running=False)
    waiting = (
        ImportJob.objects.filter(
            status=Status.QUEUED,
            scopes__warehouse__in=ImportWarehouse.objects.filter(job_id=import_id).values("warehouse"),
        )
        .exclude(pk=import_id)
        .order_by("pk")
        .distinct()
        .values_list("pk", flat=True)
    )
    for waiting_id in waiting:
        outbox_enqueue(task=IMPORT_TASK, args=[waiting_id])


def _finish(import_id: int) -> None:
    with transaction.atomic():
        job = lock_job(import_id)
        if job.finished:
            return
        if job.rows_ok and job.rows_failed:
            status = Status.PARTIAL
        elif job.rows_ok:
            status = Status.SUCCEEDED
        else:
            status = Status.FAILED  # every row was refused
        ImportJob.objects.filter(pk=import_id).update(status=status, finished_at=timezone.now())
        _release_and_wake_waiting(import_id)
    import_file_delete(import_id=import_id)
    logger.info(
        "import %s %s: %s rows, %s ok, %s failed",
        import_id,
        status,
        job.rows_total,
        job.rows_ok,
        job.rows_failed,
        extra={"import_id": import_id, "status": status},
    )


# --- the run -------------------------------------------------------------------------------------


def import_run(*, import_id: int) -> ImportJob:
    """Run (or resume) an import to its end; returns the finished job.

    Idempotent: a finished job is returned as it is; a resumed one skips its applied chunks (its
    progress commits with each chunk). Raises ImportWaiting when another import holds one of its
    warehouses (it is queued again when that one finishes), ImportBusy when another run of this
    import holds its job row (try again shortly), LockTimeout when a chunk could not lock its
    levels after bounded retries (try again later), NotFound. Nothing half-done in any case.
    """
    job = import_detail(import_id=import_id)
    if job.finished:
        return job
    with transaction.atomic():
        lock_job(import_id)  # ImportBusy while another run holds it: nothing is written then
        ImportJob.objects.filter(pk=import_id).update(attempts=F("attempts") + 1)
    if job.staged_at is None or staging_lost(job):
        try:
            stage_file(import_id)
        except FileError as exc:
            import_fail(import_id=import_id, message=exc.message, line=exc.line)
            return import_detail(import_id=import_id)
    claim_warehouses(import_id)
    pause = settings.IMPORT_CHUNK_PAUSE_MS / 1000
    while apply_next_chunk(import_id):
        if pause:
            time.sleep(pause)  # lets shoppers' reservations in between chunks
    _finish(import_id)
    drop_staging(import_id)
    return import_detail(import_id=import_id)


def import_fail(*, import_id: int, message: str, line: int | None = None) -> None:
    """End an import as failed with `message` and release its warehouses. Chunks already applied stay
    applied (each was exact and is in the ledger); `rows_done` tells how far it went."""
    with transaction.atomic():
        # A run applying a chunk holds the job row until that chunk commits: wait for it (the
        # run then sees the job finished and stops), longer than a request's lock_timeout.
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{JOB_LOCK_WAIT_MS}ms"])
        job = ImportJob.objects.select_for_update(of=("self",)).filter(pk=import_id).first()
        if job is None or job.finished:
            return
        errors = job.errors if len(job.errors) < MAX_ERRORS else job.errors[: MAX_ERRORS - 1]
        ImportJob.objects.filter(pk=import_id).update(
            status=Status.FAILED,
            finished_at=timezone.now(),
            errors=[*errors, {"line": line, "message": message}],
        )
        _release_and_wake_waiting(import_id)
    drop_staging(import_id)
    import_file_delete(import_id=import_id)
    logger.warning("import %s failed: %s", import_id, message, extra={"import_id": import_id})
