"""Step 1 of an import: the checked lines of the file into the staging table, in one transaction.

Every line, good or not, is COPYed into the UNLOGGED table `inventory_importrow` keyed by
(import id, line); bad lines carry their error. Duplicate (sku, warehouse) rows are then marked in
SQL (no set of a million keys in Python). A database crash empties the table: `staging_lost` tells
a resumed run to stage the file again.
"""

import math

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from inventory.imports.jobs import lock_job, raise_timeouts
from inventory.imports.parse import FileError, parse_stock_csv
from inventory.models import ImportJob, ImportWarehouse, Warehouse

COPY_FLUSH_ROWS = 5_000
DUPLICATE_SEARCH_WORK_MEM = "256MB"
# COPY's text format: backslash, tab and line breaks are escaped; \N is NULL.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

MARK_DUPLICATES = """
WITH repeated AS (
    SELECT sku, warehouse_id, min(line) AS first_line
      FROM inventory_importrow
     WHERE import_id = %(job)s AND error IS NULL
     GROUP BY sku, warehouse_id
    HAVING count(*) > 1
)
UPDATE inventory_importrow r
   SET error = format('Duplicate of line %%s (same sku and warehouse).', repeated.first_line)
  FROM repeated
 WHERE r.import_id = %(job)s AND r.error IS NULL
   AND r.sku = repeated.sku AND r.warehouse_id = repeated.warehouse_id AND r.line > repeated.first_line
"""

COPY_STAGING = "COPY inventory_importrow (import_id, line, sku, warehouse_id, on_hand, name, price, error) FROM STDIN"


def _stage_line(job_id: int, row: tuple) -> str:
    line, sku, warehouse_id, on_hand, name, price, error = row
    if error is not None:
        return f"{job_id}\t{line}\t\\N\t\\N\t\\N\t\\N\t\\N\t{error.translate(COPY_ESCAPES)}\n"
    name_text = "\\N" if name is None else name.translate(COPY_ESCAPES)
    price_text = "\\N" if price is None else price
    return f"{job_id}\t{line}\t{sku}\t{warehouse_id}\t{on_hand}\t{name_text}\t{price_text}\t\\N\n"


def stage_file(import_id: int) -> None:
    """Pre-parse the file into the staging table. Raises FileError if the file as a whole is
    refused (missing, empty, a bad header): the transaction rolls back, nothing of it stays staged.

    One transaction, holding the job row: the staging rows and the job's counters commit together,
    a crash leaves nothing staged, and staging again (after a database crash emptied the UNLOGGED
    table) cuts the same chunks as before (`chunk_rows` is kept).
    """
    with transaction.atomic():
        job = lock_job(import_id)
        raise_timeouts()
        warehouses = dict(Warehouse.objects.values_list("code", "id"))
        seen: set[int] = set()
        rows = last_line = 0
        try:
            with job.file.storage.open(job.file.name, "rb") as stream, connection.cursor() as cursor:
                cursor.execute("DELETE FROM inventory_importrow WHERE import_id = %s", [import_id])
                with cursor.cursor.copy(COPY_STAGING) as copy:
                    buffer: list[str] = []
                    for row in parse_stock_csv(
                        stream, warehouses=warehouses, max_line_bytes=settings.IMPORT_MAX_LINE_BYTES
                    ):
                        buffer.append(_stage_line(import_id, row))
                        if row[2] is not None:
                            seen.add(row[2])
                        last_line = row[0]
                        rows += 1
                        if len(buffer) >= COPY_FLUSH_ROWS:
                            copy.write("".join(buffer))
                            buffer.clear()
                    if buffer:
                        copy.write("".join(buffer))
                if rows == 0:
                    raise FileError(2, "The file has a header but no rows.")
                # The duplicate search hashes every (sku, warehouse) of the file: in memory, not in
                # batches spilled to disk (this transaction only).
                cursor.execute("SELECT set_config('work_mem', %s, true)", [DUPLICATE_SEARCH_WORK_MEM])
                cursor.execute(MARK_DUPLICATES, {"job": import_id})
        except FileNotFoundError:
            raise FileError(None, "The uploaded file is missing from the server.") from None
        chunk_rows = job.chunk_rows or max(1, settings.IMPORT_CHUNK_ROWS)
        ImportWarehouse.objects.bulk_create(
            [ImportWarehouse(job=job, warehouse_id=w, running=False) for w in sorted(seen)],
            ignore_conflicts=True,
        )
        ImportJob.objects.filter(pk=import_id).update(
            rows_total=rows,
            chunk_rows=chunk_rows,
            chunks_total=math.ceil(last_line / chunk_rows),
            staged_at=timezone.now(),
        )


def drop_staging(import_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM inventory_importrow WHERE import_id = %s", [import_id])


def staging_lost(job: ImportJob) -> bool:
    """True when chunks remain but the staging rows are gone (a database crash empties UNLOGGED tables)."""
    if job.staged_at is None or job.chunks_applied >= job.chunks_total:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM inventory_importrow WHERE import_id = %s)", [job.pk])
        return cursor.fetchone()[0]
