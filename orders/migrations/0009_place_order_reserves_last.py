from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
SQL = (SQL_DIR / "0009_place_order_reserves_last.sql").read_text()  # orders/placement.sql of 774bdf3
PREVIOUS = (SQL_DIR / "0007_place_order_claims_the_key.sql").read_text()


class Migration(migrations.Migration):
    """The stock levels are reserved as the last statements, so their row locks are held for less
    of the transaction. Going back restores 0007's body (same signature)."""

    dependencies = [("orders", "0008_drop_indexes_covered_by_composites")]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
