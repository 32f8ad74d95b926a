"""Stock import from CSV (DESIGN.md §9): `sku,warehouse,on_hand` with optional `name,price`.

A run, from the `import_stock` task (`run.import_run`), goes through four steps; each is safe to
run again:

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
cache is invalidated on commit, and tasks are queued through the outbox (project.outbox.services): the
upload's, and those of imports that waited for a warehouse, queued by the import releasing it.

The modules, by what they are about: `parse` (reading and checking the CSV, no database),
`jobs` (the job row: create, queue, read, hold), `stage` (step 1), `apply` (step 3) and `run`
(steps 2 and 4, the run itself, failing an import). Callers import from this package.
"""

from inventory.imports.apply import import_reference
from inventory.imports.jobs import MAX_ERRORS, ImportBusy, Status, import_create, import_detail, import_enqueue
from inventory.imports.parse import FileError, parse_stock_csv
from inventory.imports.run import ImportWaiting, import_fail, import_run

__all__ = [
    "MAX_ERRORS",
    "FileError",
    "ImportBusy",
    "ImportWaiting",
    "Status",
    "import_create",
    "import_detail",
    "import_enqueue",
    "import_fail",
    "import_reference",
    "import_run",
    "parse_stock_csv",
]
