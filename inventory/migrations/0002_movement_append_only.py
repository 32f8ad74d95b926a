from django.db import migrations

APPEND_ONLY = """
CREATE FUNCTION inventory_stockmovement_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inventory_stockmovement is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER inventory_stockmovement_append_only
    BEFORE UPDATE OR DELETE ON inventory_stockmovement
    FOR EACH ROW EXECUTE FUNCTION inventory_stockmovement_append_only();
"""

DROP = """
DROP TRIGGER inventory_stockmovement_append_only ON inventory_stockmovement;
DROP FUNCTION inventory_stockmovement_append_only();
"""


class Migration(migrations.Migration):
    """The ledger cannot be rewritten: UPDATE and DELETE on movements raise (TRUNCATE is left to tests)."""

    dependencies = [("inventory", "0001_initial")]

    operations = [migrations.RunSQL(APPEND_ONLY, DROP)]
