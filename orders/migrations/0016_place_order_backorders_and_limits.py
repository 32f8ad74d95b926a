from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement/placement.sql followed by orders/expiry.sql, as of this migration.
SQL = (SQL_DIR / "0016_place_order_backorders_and_limits.sql").read_text()
PREVIOUS = (SQL_DIR / "0014_place_order_draws_one_bucket.sql").read_text()


class Migration(migrations.Migration):
    """orders_place_order leaves each level's safety stock on the shelf, backorders what a product's
    policy allows beyond it within each level's cap, and refuses lines above a product's limits per
    order and per customer; orders_expire_chunk gives backordered units back with reserved ones.
    Same signatures: going back restores 0014's functions."""

    dependencies = [
        ("orders", "0015_allocation_backordered"),
        ("inventory", "0011_backorders_safety_limits_reorder"),
    ]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
