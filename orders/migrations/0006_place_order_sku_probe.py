from pathlib import Path

from django.db import migrations

SQL = (Path(__file__).resolve().parent.parent / "placement.sql").read_text()


class Migration(migrations.Migration):
    """Runs orders/placement.sql again: the SKU lookup probes the unique index line by line
    instead of letting the planner hash the whole product table on every order. Going back keeps
    the new body (0003's reverse drops the function)."""

    dependencies = [("orders", "0005_expire_chunk_function")]

    operations = [migrations.RunSQL(SQL, migrations.RunSQL.noop)]
