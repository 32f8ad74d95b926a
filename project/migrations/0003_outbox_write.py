from pathlib import Path

from django.db import migrations

# The function as this migration installed it.
SQL = (Path(__file__).resolve().parent / "sql" / "0003_outbox_write.sql").read_text()

DROP = "DROP FUNCTION IF EXISTS outbox_write(text, jsonb[], jsonb[], text, text);"


class Migration(migrations.Migration):
    """Installs outbox_write, the one writer of outbox rows (SQL functions and project.outbox.services).
    Going back drops it."""

    dependencies = [("project", "0002_outbox_claim")]

    operations = [migrations.RunSQL(SQL, DROP)]
