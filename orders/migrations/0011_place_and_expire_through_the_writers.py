from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement/placement.sql followed by orders/expiry.sql, as of this migration.
SQL = (SQL_DIR / "0011_place_and_expire_through_the_writers.sql").read_text()
PREVIOUS = (
    (SQL_DIR / "0009_place_order_reserves_last.sql").read_text()
    + (SQL_DIR / "0005_expire_chunk_function.sql").read_text()
)


class Migration(migrations.Migration):
    """orders_place_order and orders_expire_chunk write their outbox and ledger rows through the
    one writer of each row (outbox_write, inventory_ledger_write). Same signatures: going back
    restores 0009's orders_place_order and 0005's orders_expire_chunk."""

    dependencies = [
        ("orders", "0010_index_only_what_is_looked_up"),
        ("project", "0003_outbox_write"),
        ("inventory", "0006_ledger_write"),
    ]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
