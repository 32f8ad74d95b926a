"""`make lint`'s migration linter (manage.py lint_migrations) on a throwaway app's migrations.

The linter runs sqlmigrate against a live database: these tests run the real command in a
subprocess, on the database of `make run`'s settings, which it only reads.
"""

import pytest

from tests.scale.schema.throwaway import CREATE_ITEM, manage, migration, write_app

pytestmark = pytest.mark.slow

APP = "lintprobe"
INDEX = (
    "AddIndexConcurrentlyRetrying(model_name='item', index=models.Index(fields=['name'], name='lintprobe_item_name'))"
)
MIGRATIONS = {
    "0001_initial": CREATE_ITEM,
    # What the house asks for: an index on an existing table, built CONCURRENTLY, not atomic.
    "0002_item_name_index": migration(
        APP,
        "0001_initial",
        [INDEX],
        imports="from project.db.migrations import AddIndexConcurrentlyRetrying",
        atomic=False,
    ),
    # What would break the running release: it still reads `note`.
    "0003_drop_note": migration(
        APP, "0002_item_name_index", ["migrations.RemoveField(model_name='item', name='note')"]
    ),
}


def lint(tmp_path, exempt: dict[str, str], migrations: dict[str, str] = MIGRATIONS):
    settings = write_app(
        tmp_path, APP, migrations, settings=f"MIGRATION_LINTER_APPS = [{APP!r}]\nMIGRATION_LINTER_EXEMPT = {exempt!r}\n"
    )
    result = manage(tmp_path, settings, "lint_migrations", "--verbosity", "2")
    return result.returncode, result.stdout + result.stderr


def test_a_new_column_drop_is_refused_and_a_concurrent_index_passes(tmp_path):
    code, output = lint(tmp_path, {})

    assert code != 0, output
    assert f"({APP}, 0003_drop_note)... ERR" in output
    assert "DROPPING columns" in output
    assert f"({APP}, 0002_item_name_index)... OK" in output
    assert "backward-incompatible migration(s) above" in output


def test_an_exemption_in_settings_with_its_reason_lets_it_through(tmp_path):
    reason = "note has not been read since release 41 (expand/contract step 3)"
    code, output = lint(tmp_path, {f"{APP}.0003_drop_note": reason})

    assert code == 0, output
    assert f"({APP}, 0003_drop_note)... IGNORE" in output
    assert f"exempt {APP}.0003_drop_note: {reason}" in output
    assert "Erroneous migrations: 0/" in output


def test_an_exemption_without_a_reason_or_inside_a_migration_is_refused(tmp_path):
    ignored_inside = dict(MIGRATIONS)
    ignored_inside["0003_drop_note"] = migration(
        APP,
        "0002_item_name_index",
        ["IgnoreMigration()", "migrations.RemoveField(model_name='item', name='note')"],
        imports="from django_migration_linter import IgnoreMigration",
    )
    code, output = lint(tmp_path, {f"{APP}.0002_item_name_index": " ", f"{APP}.0009_gone": "removed"}, ignored_inside)

    assert code != 0, output
    assert f"MIGRATION_LINTER_EXEMPT['{APP}.0002_item_name_index']: say why it is safe" in output
    assert f"MIGRATION_LINTER_EXEMPT['{APP}.0009_gone']: no such migration" in output
    assert f"{APP}.0003_drop_note: IgnoreMigration inside a migration" in output
