import re
from pathlib import Path

from django.db import migrations, models

SQL_DIR = Path(__file__).resolve().parent / "sql"
# inventory_hot_take picking a bucket by slot.
SQL = (SQL_DIR / "0009_bucket_slots.sql").read_text()
# Back: 0008's inventory_hot_take, as that migration installed it.
BACK = "DROP FUNCTION IF EXISTS inventory_hot_take(bigint, bigint, text, bigint, timestamptz, integer);" + re.search(
    r"CREATE OR REPLACE FUNCTION inventory_hot_take\(.*?\n\$fn\$;\n", (SQL_DIR / "0008_stock_buckets.sql").read_text(), re.S
).group(0)
# The buckets a level already has are numbered in id order, as the slow path would have made them.
NUMBER_SLOTS = """
UPDATE inventory_stockbucket AS b SET slot = n.slot
  FROM (SELECT id, row_number() OVER (PARTITION BY level_id ORDER BY id) AS slot FROM inventory_stockbucket) AS n
 WHERE b.id = n.id
"""


class Migration(migrations.Migration):
    """Stock buckets get a slot, 1 .. the product's stock_buckets, unique per level: an order picks
    a bucket by a random slot, one index probe, instead of reading all of the level's buckets. The
    unique index replaces the (level, id) one. Every writer of buckets is a SQL function, replaced in
    this same transaction, so no writer ever sees the new column without knowing it."""

    dependencies = [
        ("inventory", "0008_stock_buckets"),
    ]

    operations = [
        migrations.AddField(
            model_name="stockbucket",
            name="slot",
            field=models.PositiveSmallIntegerField(null=True),
        ),
        migrations.RunSQL(NUMBER_SLOTS, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="stockbucket",
            name="slot",
            field=models.PositiveSmallIntegerField(),
        ),
        migrations.RemoveIndex(
            model_name="stockbucket",
            name="stockbucket_level_id",
        ),
        migrations.AddConstraint(
            model_name="stockbucket",
            constraint=models.UniqueConstraint(fields=("level", "slot"), name="stockbucket_level_slot"),
        ),
        # About 15 buckets to a page instead of about 150: the takes of a hot level's buckets spread
        # their page locks over several pages, and each page keeps room for its rows' next versions.
        migrations.RunSQL(
            "ALTER TABLE inventory_stockbucket SET (fillfactor = 10)",
            "ALTER TABLE inventory_stockbucket RESET (fillfactor)",
        ),
        migrations.RunSQL(SQL, BACK),
    ]
