from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement/placement.sql followed by orders/expiry.sql, as of this migration.
SQL = (SQL_DIR / "0014_place_order_draws_one_bucket.sql").read_text()
PREVIOUS = (SQL_DIR / "0013_place_order_takes_from_buckets.sql").read_text()


class Migration(migrations.Migration):
    """orders_place_order plans a hot level from whether any of its buckets holds a unit on its
    first attempt, and passes the product's stock_buckets to inventory_hot_take, which draws one
    bucket by slot. Same signatures: going back restores 0013's functions."""

    dependencies = [
        ("orders", "0013_place_order_takes_from_buckets"),
        ("inventory", "0009_bucket_slots"),
    ]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
