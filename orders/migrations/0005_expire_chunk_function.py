from pathlib import Path

from django.db import migrations

# The function as this migration installed it (orders/expiry.sql, unchanged since).
SQL = (Path(__file__).resolve().parent / "sql" / "0005_expire_chunk_function.sql").read_text()

DROP = "DROP FUNCTION IF EXISTS orders_expire_chunk(timestamptz, integer, timestamptz, bigint, bigint[], text, text);"


class Migration(migrations.Migration):
    """Installs orders_expire_chunk. Going back drops it."""

    dependencies = [("orders", "0004_expiry_index_with_id")]

    operations = [migrations.RunSQL(SQL, DROP)]
