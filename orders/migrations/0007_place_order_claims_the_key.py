from pathlib import Path

from django.db import migrations

SQL_DIR = Path(__file__).resolve().parent / "sql"
SQL = (SQL_DIR / "0007_place_order_claims_the_key.sql").read_text()  # orders/placement.sql of 4b04890
PREVIOUS = (SQL_DIR / "0006_place_order_sku_probe.sql").read_text()

# A new signature is a new function: each direction drops the other's.
DROP_OLD = """
DROP FUNCTION IF EXISTS orders_place_order(bigint, bigint, text, text, jsonb, jsonb, text, text, timestamptz,
                                            text, text, text, integer);
"""
DROP_NEW = """
DROP FUNCTION IF EXISTS orders_place_order(bigint, text, text, jsonb, jsonb, text, text, timestamptz,
                                            text, text, text, integer, text, text, timestamptz);
"""


class Migration(migrations.Migration):
    """orders_place_order claims the idempotency key itself, in the order's transaction (one
    round trip and one commit per order instead of two). Going back drops the new signature and
    recreates 0006's function."""

    dependencies = [("orders", "0006_place_order_sku_probe")]

    operations = [migrations.RunSQL(DROP_OLD + SQL, DROP_NEW + PREVIOUS)]
