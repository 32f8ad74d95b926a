#!/usr/bin/env bash
# Prove the latest backup restores: restore it into a scratch database, check the schema is at
# the code's migrations, count the main tables and run the stock reconciliation on it.
# Exits non-zero on any failure; run it weekly (docs/operating.md, "Backups").
#
#   DATABASE_URL=postgres://user@host:5432/stockroom BACKUP_DIR=/var/backups/stockroom ops/backup/restore-check.sh [DUMP]
#
# The scratch database (stockroom_restore_check, or RESTORE_DB) is created on the same server
# and dropped at the end; the live database is only used for its address.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${DATABASE_URL:?DATABASE_URL is required (the server to restore on)}"
BACKUP_DIR="${BACKUP_DIR:-var/backups}"
RESTORE_DB="${RESTORE_DB:-stockroom_restore_check}"
dump="${1:-$(ls -1t "$BACKUP_DIR"/stockroom-*.dump 2>/dev/null | head -n 1)}"
[ -n "$dump" ] && [ -f "$dump" ] || { echo "no dump found in $BACKUP_DIR" >&2; exit 1; }

server_url="${DATABASE_URL%/*}"
scratch_url="$server_url/$RESTORE_DB"
admin_url="$server_url/postgres"

PGOPTIONS='-c client_min_messages=warning' psql --dbname="$admin_url" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS \"$RESTORE_DB\""
psql --dbname="$admin_url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$RESTORE_DB\""
trap 'psql --dbname="$admin_url" -qc "DROP DATABASE IF EXISTS \"$RESTORE_DB\"" >/dev/null 2>&1 || true' EXIT

pg_restore --dbname="$scratch_url" --no-owner --no-privileges --exit-on-error "$dump"

export DATABASE_URL="$scratch_url" DB_POOL=0
# The dump's schema is the code's: no migration is missing (nothing would need applying).
.venv/bin/python manage.py migrate --check --plan >/dev/null
.venv/bin/python manage.py shell --verbosity 0 -c '
from inventory.models import StockLevel, StockMovement
from orders.jobs import reconcile_stock
from orders.models import Order
run = reconcile_stock()
print(f"restored: {Order.objects.count()} orders, {StockLevel.objects.count()} stock levels, "
      f"{StockMovement.objects.count()} ledger rows; reconciliation {run.outcome} ({run.breach_count} breaches)")
raise SystemExit(1 if run.breach_count else 0)
'
echo "restore check passed: $dump"
