from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement/placement.sql followed by orders/expiry.sql, as of this migration.
SQL = (SQL_DIR / "0013_place_order_takes_from_buckets.sql").read_text()
PREVIOUS = (SQL_DIR / "0011_place_and_expire_through_the_writers.sql").read_text()


class Migration(migrations.Migration):
    """orders_place_order counts a level's stock buckets in what it may take and takes from them
    through inventory_hot_take; orders_expire_chunk locks levels FOR NO KEY UPDATE (inventory.locks
    says why). Same signatures: going back restores 0011's functions."""

    dependencies = [
        ("orders", "0012_shipments_and_returns"),
        ("inventory", "0008_stock_buckets"),
    ]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
