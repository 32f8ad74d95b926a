"""Stock import from CSV (DESIGN.md §9): `sku,warehouse,on_hand` with optional `name,price`.

A run, from the `import_stock` task, goes through four steps; each is safe to run again:

1. **Stage** (one transaction): a streaming pre-parse reads the uploaded file line by line with a
   bounded buffer (flat memory whatever the file holds), checks each line (UTF-8, columns, SKU,
   known warehouse, numbers, length) and COPYs every line, good or not, into the UNLOGGED
   staging table `inventory_importrow` keyed by (import id, line); bad lines carry their error.
   Duplicate (sku, warehouse) rows are then marked in SQL (no set of a million keys in Python).
   A wrong header or an empty file fails the whole import.
2. **Claim**: the import's warehouses are claimed through the partial unique index on
   `ImportWarehouse(running)`: one running import per warehouse, across all its chunks.
   While another import holds one of them, this one stays queued; the holder queues it again
   (through the outbox) when it releases the warehouse.
3. **Chunks**, one transaction each, by line range (IMPORT_CHUNK_ROWS lines): create products that
   are missing when the row gives name and price; create missing levels with their new on_hand;
   lock the chunk's levels in pk order (`SELECT ... ORDER BY id FOR UPDATE`); refuse, as row
   errors, unknown SKUs and rows whose new on_hand would fall below `reserved`; set the rest
   set-based (`UPDATE ... FROM` staging), bumping `version` only where on_hand changes; write one
   ledger row per changed level with the real delta (new - old, reason `import`, reference
   `import:<id>`); and record progress (rows_done, chunks_applied, errors) in the same
   transaction. A run resumed after a crash therefore skips exactly the chunks already applied.
4. **Finish**: status `succeeded`, `partial` (some rows failed) or `failed` (none applied), the
   warehouses released; then the staging rows are dropped.

Import semantics (where DESIGN.md is silent): columns may come in any order and other columns are
ignored (a stock export imports as it is); `on_hand` is the absolute count, as in a cycle count;
rows whose value equals the current one are counted as done and write no ledger row. `name` and
`price` only create a product that does not exist; an existing product keeps its own. Blank lines
are skipped and not counted; every other line after the header is one row, reported by its
physical line number (the header is line 1). A quoted field cannot span lines. Errors keep the
first MAX_ERRORS (1000) messages; `rows_failed` counts them all.

Concurrency: a run locks its own job row (`FOR UPDATE SKIP LOCKED`) in each transaction, so a
second delivery of the task while the first still works waits and retries instead of applying
anything twice. No side effect (cache, Celery) happens while stock rows are locked: the catalogue
cache is invalidated on commit, and tasks are queued through the outbox (project.outbox): the
upload's, and those of imports that waited for a warehouse, queued by the import releasing it.
"""

import csv
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from prometheus_client import Counter

from inventory.cache import catalogue_changed
from inventory.models import ImportJob, ImportWarehouse, Product, StockMovement, Warehouse
from inventory.services import import_file_delete
from project.db import Retry, atomic_with_retry
from project.errors import NotFound
from project.observability import STOCK_CHANGES
from project.outbox import outbox_enqueue

logger = logging.getLogger("stockroom.inventory.imports")

Status = ImportJob.Status
IMPORT_TASK = "inventory.import_stock"
REQUIRED_COLUMNS = ("sku", "warehouse", "on_hand")
OPTIONAL_COLUMNS = ("name", "price")
MAX_ERRORS = 1000
MAX_ON_HAND = 1_000_000_000
COPY_FLUSH_ROWS = 5_000
DUPLICATE_SEARCH_WORK_MEM = "256MB"
JOB_LOCK_WAIT_MS = 60_000
SKU_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PRICE_RE = re.compile(r"\d{1,10}(?:\.\d{1,2})?")
NAME_MAX = Product._meta.get_field("name").max_length
DEFAULT_LOW_STOCK_THRESHOLD = Product._meta.get_field("low_stock_threshold").default
# COPY's text format: backslash, tab and line breaks are escaped; \N is NULL.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

IMPORT_ROWS = Counter("stockroom_import_rows_total", "Rows of stock imports applied, by result", ["result"])

__all__ = [
    "FileError",
    "ImportBusy",
    "ImportWaiting",
    "import_create",
    "import_detail",
    "import_enqueue",
    "import_fail",
    "import_run",
    "parse_stock_csv",
]


class FileError(Exception):
    """The file as a whole cannot be imported (empty, unreadable or wrong header)."""

    def __init__(self, line: int | None, message: str):
        self.line = line
        self.message = message
        super().__init__(message)


class ImportBusy(Exception):
    """Another run of the same import (a second delivery of its task) holds the job row right now.
    Nothing was changed; try again in a moment."""


class ImportWaiting(Exception):
    """Another import holds one of this import's warehouses. Nothing was changed; the job stays
    queued and the holder queues it again when it finishes (releasing the warehouse)."""


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


# --- the streaming pre-parse -----------------------------------------------------------------


def _physical_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text without its line break, problem) for each line of the file.

    Reads at most max_bytes + 2 bytes at a time, so an over-long line (or a file without line
    breaks) is skipped in bounded steps instead of being held in memory. Each line is decoded on
    its own: a bad byte spoils its line only.
    """
    readline = stream.readline
    limit = max_bytes + 2  # room for "\r\n"
    number = 0
    while True:
        raw = readline(limit)
        if not raw:
            return
        number += 1
        if raw[-1] != 10 and len(raw) == limit:  # no line break within the limit: too long
            while True:
                rest = readline(65536)
                if not rest or rest[-1] == 10:
                    break
            yield number, None, f"The line is longer than {max_bytes} bytes."
            continue
        raw = raw.rstrip(b"\r\n")
        if len(raw) > max_bytes:
            yield number, None, f"The line is longer than {max_bytes} bytes."
            continue
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield number, None, f"The line is not valid UTF-8 (byte {exc.start + 1})."


def _split(text: str) -> list[str]:
    if '"' not in text:
        return text.split(",")  # what csv would return for a line without quotes, much faster
    return next(csv.reader([text], strict=True))


def _header(number: int, text: str) -> list[str]:
    try:
        names = [name.strip().lower() for name in _split(text)]
    except csv.Error as exc:
        raise FileError(number, f"The header line is not valid CSV: {exc}.") from None
    # Other columns are ignored: a stock export (which adds reserved, available...) imports as is.
    problems = []
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    repeated = sorted({name for name in names if names.count(name) > 1 and name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS})
    if missing:
        problems.append("missing " + ", ".join(missing))
    if repeated:
        problems.append("repeated " + ", ".join(repeated))
    if problems:
        raise FileError(
            number,
            "The header must name the columns sku, warehouse, on_hand and optionally name, price "
            f"({'; '.join(problems)}).",
        )
    return names


def _bad(line: int, message: str) -> tuple:
    return line, None, None, None, None, None, message


def parse_stock_csv(
    stream: BinaryIO, *, warehouses: dict[str, int], max_line_bytes: int
) -> Iterator[tuple[int, str | None, int | None, int | None, str | None, str | None, str | None]]:
    """Check each data line of a stock CSV; yield (line, sku, warehouse_id, on_hand, name, price, error).

    A good row has `error` None; a bad one has only its line and error. Raises FileError for an
    empty file or a bad header. Memory stays flat: nothing is kept between lines.
    """
    lines = _physical_lines(stream, max_line_bytes)
    for number, text, problem in lines:
        if problem is not None:
            raise FileError(number, f"The header line cannot be read: {problem}")
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte order mark, as spreadsheets write it
        if text.strip():
            break
    else:
        raise FileError(1, "The file is empty.")
    names = _header(number, text)
    width = len(names)
    i_sku, i_wh, i_qty = names.index("sku"), names.index("warehouse"), names.index("on_hand")
    i_name = names.index("name") if "name" in names else None
    i_price = names.index("price") if "price" in names else None
    sku_match, price_match = SKU_RE.fullmatch, PRICE_RE.fullmatch
    find_warehouse = warehouses.get

    for number, text, problem in lines:
        if problem is not None:
            yield _bad(number, problem)
            continue
        if not text or text.isspace():
            continue
        if "\x00" in text:
            yield _bad(number, "The line contains a NUL character.")
            continue
        try:
            fields = _split(text)
        except csv.Error as exc:
            yield _bad(number, f"The line is not valid CSV: {exc}.")
            continue
        if len(fields) != width:
            yield _bad(number, f"Expected {width} columns, found {len(fields)}.")
            continue
        sku = fields[i_sku].strip()
        if not sku_match(sku):
            message = (
                "sku is empty."
                if not sku
                else f"sku {sku[:70]!r} is not valid (letters, digits, '.', '_', '-'; at most 64)."
            )
            yield _bad(number, message)
            continue
        code = fields[i_wh].strip()
        warehouse_id = find_warehouse(code)
        if warehouse_id is None:
            yield _bad(number, f"Unknown warehouse {code[:40]!r}.")
            continue
        quantity = fields[i_qty].strip()
        if not (quantity.isascii() and quantity.isdigit() and len(quantity) <= 10) or int(quantity) > MAX_ON_HAND:
            yield _bad(number, f"on_hand {quantity[:40]!r} is not a whole number from 0 to {MAX_ON_HAND}.")
            continue
        name = price = None
        if i_name is not None:
            name = fields[i_name].strip() or None
            if name is not None and len(name) > NAME_MAX:
                yield _bad(number, f"name is longer than {NAME_MAX} characters.")
                continue
        if i_price is not None:
            price = fields[i_price].strip() or None
            if price is not None and not price_match(price):
                yield _bad(number, f"price {price[:40]!r} is not an amount like 12.50 (at most 2 decimals).")
                continue
        yield number, sku, warehouse_id, int(quantity), name, price, None


# --- step 1: stage -------------------------------------------------------------------------------

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


def _raise_timeouts() -> None:
    """A batch transaction may run longer than a request's statement_timeout (SET LOCAL only)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)", [f"{settings.IMPORT_STATEMENT_TIMEOUT_MS}ms"]
        )


def _lock_job(import_id: int) -> ImportJob:
    """This run's hold on its job for one transaction; ImportBusy if another run holds it."""
    job = ImportJob.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=import_id).first()
    if job is None:
        if ImportJob.objects.filter(pk=import_id).exists():
            raise ImportBusy(f"import {import_id} is being worked on by another run")
        raise NotFound(f"No import {import_id}.")
    return job


COPY_STAGING = "COPY inventory_importrow (import_id, line, sku, warehouse_id, on_hand, name, price, error) FROM STDIN"


def _stage_line(job_id: int, row: tuple) -> str:
    line, sku, warehouse_id, on_hand, name, price, error = row
    if error is not None:
        return f"{job_id}\t{line}\t\\N\t\\N\t\\N\t\\N\t\\N\t{error.translate(COPY_ESCAPES)}\n"
    name_text = "\\N" if name is None else name.translate(COPY_ESCAPES)
    price_text = "\\N" if price is None else price
    return f"{job_id}\t{line}\t{sku}\t{warehouse_id}\t{on_hand}\t{name_text}\t{price_text}\t\\N\n"


def _stage(import_id: int) -> bool:
    """Pre-parse the file into the staging table; False if the file as a whole was refused.

    One transaction, holding the job row: the staging rows and the job's counters commit together,
    a crash leaves nothing staged, and staging again (after a database crash emptied the UNLOGGED
    table) cuts the same chunks as before (`chunk_rows` is kept).
    """
    file_error = None
    with transaction.atomic():
        job = _lock_job(import_id)
        _raise_timeouts()
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
            file_error = FileError(None, "The uploaded file is missing from the server.")
        except FileError as exc:
            file_error = exc
        if file_error is not None:
            transaction.set_rollback(True)  # nothing of a refused file stays staged
        else:
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
    if file_error is not None:
        import_fail(import_id=import_id, message=file_error.message, line=file_error.line)
        return False
    return True


# --- step 2: claim the warehouses ----------------------------------------------------------------


def _claim(import_id: int) -> None:
    """Hold the import's warehouses (ImportWarehouse.running) or raise ImportWaiting.

    The partial unique index allows one running claim per warehouse. Claims are taken one by one
    in warehouse id order, so two imports claiming overlapping sets wait in the same order.
    """
    try:
        with transaction.atomic():
            job = _lock_job(import_id)
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


# --- step 3: chunks ------------------------------------------------------------------------------

# Every statement reads its chunk by line range off the staging primary key:
#   r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s

CREATE_PRODUCTS = """
INSERT INTO inventory_product (sku, name, description, price, active, low_stock_threshold,
                               low_stock_alerted, version, created_at, updated_at)
SELECT DISTINCT ON (r.sku) r.sku, r.name, '', r.price, true, %(threshold)s, false, 1, now(), now()
  FROM inventory_importrow r
 WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
   AND r.name IS NOT NULL AND r.price IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM inventory_product p WHERE p.sku = r.sku)
 ORDER BY r.sku, r.line
    ON CONFLICT (sku) DO NOTHING
RETURNING sku
"""

# One statement applies the rest of a chunk, so each row's product and level are looked up once:
# - `src`: the chunk's good rows with their product (none: unknown SKU, a row error);
# - `locked`: their existing levels, locked in primary key order (DESIGN §4: levels by pk
#   ascending; the sort runs below the row locks), read after the lock so `on_hand` and
#   `reserved` are the current ones and cannot move until commit;
# - `created`: missing levels, inserted with their imported on_hand (reserved 0, nothing to
#   refuse) in (product, warehouse) order, the order in which the stock services create levels;
# - `updated`: levels whose on_hand changes and stays >= reserved (version bumped only there);
# - `moved`: one ledger row per changed level with the real delta (new - old).
# A level created by someone else since the statement's snapshot is neither in `locked` nor in
# `created` (ON CONFLICT DO NOTHING): `found` < `known` then, and the chunk is run again.
APPLY_CHUNK = """
WITH src AS MATERIALIZED (
    SELECT r.line, r.sku, r.warehouse_id, r.on_hand AS new_on_hand, p.id AS product_id
      FROM inventory_importrow r
      LEFT JOIN inventory_product p ON p.sku = r.sku
     WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
), locked AS MATERIALIZED (
    SELECT s.id, s.on_hand AS old_on_hand, s.reserved, src.line, src.sku, src.new_on_hand
      FROM src
      JOIN inventory_stocklevel s ON s.product_id = src.product_id AND s.warehouse_id = src.warehouse_id
     ORDER BY s.id
       FOR UPDATE OF s
), missing AS MATERIALIZED (
    SELECT src.product_id, src.warehouse_id, src.new_on_hand, src.sku
      FROM src
     WHERE src.product_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM inventory_stocklevel s
                        WHERE s.product_id = src.product_id AND s.warehouse_id = src.warehouse_id)
), created AS (
    INSERT INTO inventory_stocklevel (product_id, warehouse_id, on_hand, reserved, version, updated_at)
    SELECT product_id, warehouse_id, new_on_hand, 0, 1, now()
      FROM missing
     ORDER BY product_id, warehouse_id
        ON CONFLICT (product_id, warehouse_id) DO NOTHING
    RETURNING id, on_hand
), updated AS (
    UPDATE inventory_stocklevel s
       SET on_hand = l.new_on_hand, version = s.version + 1, updated_at = now()
      FROM locked l
     WHERE s.id = l.id AND l.new_on_hand <> l.old_on_hand AND l.new_on_hand >= l.reserved
    RETURNING s.id, l.sku, l.new_on_hand - l.old_on_hand AS delta
), moved AS MATERIALIZED (
    SELECT inventory_ledger_write(coalesce(array_agg(c.id ORDER BY c.part, c.id), '{}'),
                                  coalesce(array_agg(c.delta ORDER BY c.part, c.id), '{}'),
                                  array_fill(0::bigint, ARRAY[count(*)::integer]), %(reason)s,
                                  array_fill(%(reference)s::text, ARRAY[count(*)::integer]), '',
                                  %(actor)s::bigint, now()) AS rows
      FROM (SELECT id, on_hand AS delta, 1 AS part FROM created WHERE on_hand <> 0
             UNION ALL
            SELECT id, delta, 2 FROM updated) c
)
SELECT (SELECT count(*) FROM inventory_importrow r
         WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s) AS rows,
       (SELECT count(*) FROM src WHERE product_id IS NOT NULL) AS known,
       (SELECT count(*) FROM created) + (SELECT count(*) FROM locked) AS found,
       (SELECT count(*) FROM locked WHERE new_on_hand < reserved) AS refused,
       (SELECT rows FROM moved) AS moved,
       (SELECT coalesce(array_agg(sku), '{}')
          FROM (SELECT sku FROM missing WHERE new_on_hand <> 0
                 UNION ALL
                SELECT sku FROM updated) changed) AS skus,
       (SELECT coalesce(json_agg(json_build_array(line, message) ORDER BY line), '[]')
          FROM (SELECT r.line, r.error AS message
                  FROM inventory_importrow r
                 WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NOT NULL
                 UNION ALL
                SELECT line, format('Unknown SKU %%s: give name and price to create the product.', sku)
                  FROM src WHERE product_id IS NULL
                 UNION ALL
                SELECT line, format('on_hand %%s would be below the %%s units reserved for orders.',
                                    new_on_hand, reserved)
                  FROM locked WHERE new_on_hand < reserved
                 ORDER BY 1
                 LIMIT %(room)s) errors) AS errors
"""


def import_reference(import_id: int) -> str:
    return f"import:{import_id}"


@atomic_with_retry
def _apply_next_chunk(import_id: int) -> bool:
    """Apply the next chunk and record it, in one transaction; False when none is left.

    Retried as a whole on a lock timeout or deadlock, or when a level appeared under it
    (then LockTimeout after bounded attempts: the task is tried again later).
    """
    job = _lock_job(import_id)
    if job.finished or job.chunks_applied >= job.chunks_total:
        return False  # done, or stopped by staff (import_fail released its warehouses)
    _raise_timeouts()
    index = job.chunks_applied
    params = {
        "job": import_id,
        "lo": index * job.chunk_rows + 1,
        "hi": (index + 1) * job.chunk_rows,
        "threshold": DEFAULT_LOW_STOCK_THRESHOLD,
        "reason": StockMovement.Reason.IMPORT,
        "reference": import_reference(import_id),
        "actor": job.created_by_id,
        "room": max(0, MAX_ERRORS - len(job.errors)),
    }
    with connection.cursor() as cursor:
        cursor.execute(CREATE_PRODUCTS, params)
        created_products = [sku for (sku,) in cursor.fetchall()]
        cursor.execute(APPLY_CHUNK, params)
        rows, known, found, refused, moved, skus, errors = cursor.fetchone()
    if found != known:
        raise Retry(f"import {import_id}: a stock level was created by someone else during chunk {index}")
    if isinstance(errors, str):
        errors = json.loads(errors)
    ok = known - refused
    failed = rows - ok
    ImportJob.objects.filter(pk=import_id).update(
        rows_done=F("rows_done") + rows,
        rows_ok=F("rows_ok") + ok,
        rows_failed=F("rows_failed") + failed,
        chunks_applied=F("chunks_applied") + 1,
        errors=job.errors + [{"line": line, "message": message} for line, message in errors],
        updated_at=timezone.now(),
    )
    if skus or created_products:
        catalogue_changed([*created_products, *skus])  # after commit

    def count():
        IMPORT_ROWS.labels(result="ok").inc(ok)
        IMPORT_ROWS.labels(result="failed").inc(failed)
        STOCK_CHANGES.labels(reason=StockMovement.Reason.IMPORT).inc(moved)

    transaction.on_commit(count)
    return True


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
        job = _lock_job(import_id)
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


def _drop_staging(import_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM inventory_importrow WHERE import_id = %s", [import_id])


def _staging_lost(job: ImportJob) -> bool:
    """True when chunks remain but the staging rows are gone (a database crash empties UNLOGGED tables)."""
    if job.staged_at is None or job.chunks_applied >= job.chunks_total:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM inventory_importrow WHERE import_id = %s)", [job.pk])
        return cursor.fetchone()[0]


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
        _lock_job(import_id)  # ImportBusy while another run holds it: nothing is written then
        ImportJob.objects.filter(pk=import_id).update(attempts=F("attempts") + 1)
    if (job.staged_at is None or _staging_lost(job)) and not _stage(import_id):
        return import_detail(import_id=import_id)
    _claim(import_id)
    pause = settings.IMPORT_CHUNK_PAUSE_MS / 1000
    while _apply_next_chunk(import_id):
        if pause:
            time.sleep(pause)  # lets shoppers' reservations in between chunks
    _finish(import_id)
    _drop_staging(import_id)
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
    _drop_staging(import_id)
    import_file_delete(import_id=import_id)
    logger.warning("import %s failed: %s", import_id, message, extra={"import_id": import_id})
