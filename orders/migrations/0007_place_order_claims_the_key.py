from pathlib import Path

from django.db import migrations

SQL = (Path(__file__).resolve().parent.parent / "placement.sql").read_text()

# The signature before the key's claim moved into the function (a new signature is a new function).
DROP_OLD = """
DROP FUNCTION IF EXISTS orders_place_order(bigint, bigint, text, text, jsonb, jsonb, text, text, timestamptz,
                                            text, text, text, integer);
"""


class Migration(migrations.Migration):
    """orders_place_order claims the idempotency key itself, in the order's transaction (one
    round trip and one commit per order instead of two). Going back keeps the new function."""

    dependencies = [("orders", "0006_place_order_sku_probe")]

    operations = [migrations.RunSQL(DROP_OLD + SQL, migrations.RunSQL.noop)]
