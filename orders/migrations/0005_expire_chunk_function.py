from pathlib import Path

from django.db import migrations

SQL = (Path(__file__).resolve().parent.parent / "expiry.sql").read_text()

DROP = "DROP FUNCTION IF EXISTS orders_expire_chunk(timestamptz, integer, timestamptz, bigint, bigint[], text, text);"


class Migration(migrations.Migration):
    """Installs orders/expiry.sql (CREATE OR REPLACE). A later change to that file needs a new
    migration that runs it again."""

    dependencies = [("orders", "0004_expiry_index_with_id")]

    operations = [migrations.RunSQL(SQL, DROP)]
