from pathlib import Path

from django.db import migrations

# The function as this migration installed it.
SQL = (Path(__file__).resolve().parent / "sql" / "0006_ledger_write.sql").read_text()

DROP = "DROP FUNCTION IF EXISTS inventory_ledger_write(bigint[], bigint[], bigint[], text, text[], text, bigint, timestamptz);"


class Migration(migrations.Migration):
    """Installs inventory_ledger_write, the one writer of ledger rows (every SQL path and
    inventory.services._record). Going back drops it."""

    dependencies = [("inventory", "0005_index_only_what_is_looked_up")]

    operations = [migrations.RunSQL(SQL, DROP)]
