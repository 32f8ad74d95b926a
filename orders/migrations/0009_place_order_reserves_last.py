from pathlib import Path

from django.db import migrations

SQL = (Path(__file__).resolve().parent.parent / "placement.sql").read_text()


class Migration(migrations.Migration):
    """Runs orders/placement.sql again: the stock levels are reserved as the last statements, so
    their row locks are held for less of the transaction. Going back keeps the new body."""

    dependencies = [("orders", "0008_drop_indexes_covered_by_composites")]

    operations = [migrations.RunSQL(SQL, migrations.RunSQL.noop)]
