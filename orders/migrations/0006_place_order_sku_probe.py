from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement.sql of d494a32. It also carries ef6dc93's change (the relay NOTIFY skipped when
# p_notify_channel is NULL), which changed the file without a migration of its own.
SQL = (SQL_DIR / "0006_place_order_sku_probe.sql").read_text()
PREVIOUS = (SQL_DIR / "0003_place_order_function.sql").read_text()


class Migration(migrations.Migration):
    """The SKU lookup probes the unique index line by line instead of letting the planner hash the
    whole product table on every order. Going back restores 0003's body (same signature)."""

    dependencies = [("orders", "0005_expire_chunk_function")]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
