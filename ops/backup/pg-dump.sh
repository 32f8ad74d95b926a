#!/usr/bin/env bash
# Nightly logical backup of Stockroom's database (docs/operating.md, "Backups").
#
#   DATABASE_URL=postgres://... BACKUP_DIR=/var/backups/stockroom ops/backup/pg-dump.sh
#
# One custom-format dump per run (compressed, restorable table by table with pg_restore), named
# by UTC time, written to a temporary name and renamed when complete, so a half-written file is
# never taken for a backup. Dumps older than BACKUP_KEEP_DAYS (default 14) are deleted.
# pg_dump reads one consistent snapshot and takes no lock that blocks shoppers (ACCESS SHARE only).
# The import staging table is UNLOGGED scratch space: its rows are left out.
set -euo pipefail

: "${DATABASE_URL:?DATABASE_URL is required}"
BACKUP_DIR="${BACKUP_DIR:-var/backups}"
BACKUP_KEEP_DAYS="${BACKUP_KEEP_DAYS:-14}"
mkdir -p "$BACKUP_DIR"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="$BACKUP_DIR/stockroom-$stamp.dump"
pg_dump --dbname="$DATABASE_URL" --format=custom --compress=6 --no-owner --no-privileges \
  --no-unlogged-table-data --file="$target.partial"
mv "$target.partial" "$target"
find "$BACKUP_DIR" -maxdepth 1 -name 'stockroom-*.dump' -mtime +"$BACKUP_KEEP_DAYS" -delete
echo "$target"
