from pathlib import Path

from django.db import migrations

# The function as this migration installed it (orders/placement.sql of be3ded2): a migration
# carries the SQL of its own day, so a fresh `migrate` replays history as it happened.
SQL = (Path(__file__).resolve().parent / "sql" / "0003_place_order_function.sql").read_text()

DROP = """
DROP FUNCTION IF EXISTS orders_place_order(bigint, bigint, text, text, jsonb, jsonb, text, text, timestamptz,
                                            text, text, text, integer);
DROP FUNCTION IF EXISTS orders_iso_time(timestamptz);
"""


class Migration(migrations.Migration):
    """Installs orders_place_order, the one-round-trip placement. Going back drops it."""

    dependencies = [("orders", "0002_job_reports"), ("inventory", "0003_importjob"), ("project", "0001_outbox")]

    operations = [migrations.RunSQL(SQL, DROP)]
