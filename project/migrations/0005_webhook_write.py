from pathlib import Path

from django.db import migrations

# The functions as this migration installed them.
SQL = (Path(__file__).resolve().parent / "sql" / "0005_webhook_write.sql").read_text()

DROP = """
DROP FUNCTION IF EXISTS webhook_write(text, text[], jsonb[], text[]);
DROP FUNCTION IF EXISTS webhook_wanted(text);
"""


class Migration(migrations.Migration):
    """Installs webhook_wanted and webhook_write, the one writer of webhook events and deliveries
    (project.webhooks.services and SQL functions such as orders_place_order). Going back drops them."""

    dependencies = [("project", "0004_webhooks")]

    operations = [migrations.RunSQL(SQL, DROP)]
