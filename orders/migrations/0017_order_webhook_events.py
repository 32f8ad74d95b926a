from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
# orders/placement/placement.sql, orders/expiry.sql and orders/events.sql, as of this migration.
SQL = (SQL_DIR / "0017_order_webhook_events.sql").read_text()
PREVIOUS = (SQL_DIR / "0016_place_order_backorders_and_limits.sql").read_text() + """
DROP FUNCTION IF EXISTS orders_webhook_emit(text, bigint[]);
DROP FUNCTION IF EXISTS orders_webhook_payload(bigint);
"""


class Migration(migrations.Migration):
    """Orders emit webhook events: orders_webhook_payload and orders_webhook_emit (orders/events.sql),
    called by orders_place_order (order.placed) and orders_expire_chunk (order.expired) in their own
    transactions. Same signatures: going back restores 0016's functions and drops the new ones."""

    dependencies = [
        ("orders", "0016_place_order_backorders_and_limits"),
        ("project", "0005_webhook_write"),
    ]

    operations = [migrations.RunSQL(SQL, PREVIOUS)]
