from pathlib import Path

from django.db import migrations

SQL = (Path(__file__).resolve().parent.parent / "placement.sql").read_text()

DROP = """
DROP FUNCTION IF EXISTS orders_place_order(bigint, bigint, text, text, jsonb, jsonb, text, text, timestamptz,
                                            text, text, text, integer);
DROP FUNCTION IF EXISTS orders_iso_time(timestamptz);
"""


class Migration(migrations.Migration):
    """Installs orders/placement.sql (CREATE OR REPLACE). A later change to that file needs a new
    migration that runs it again."""

    dependencies = [("orders", "0002_job_reports"), ("inventory", "0003_importjob"), ("project", "0001_outbox")]

    operations = [migrations.RunSQL(SQL, DROP)]
