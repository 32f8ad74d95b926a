import pytest
from django.db import connection

from project.observability import queries as slow_queries
from project.observability.queries import lock_kind, statement_shape


@pytest.fixture
def threshold_ms(monkeypatch):
    def set_threshold(ms: float) -> None:
        monkeypatch.setattr(slow_queries._timer, "threshold", ms / 1000.0)

    return set_threshold


def slow_lines(json_log) -> list[dict]:
    return [line for line in json_log() if line["logger"] == "stockroom.slow_query"]


def test_a_slow_statement_is_logged_with_its_duration_and_shape_never_its_parameters(db, json_log, threshold_ms):
    threshold_ms(50)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.1), %s::text, 'inline-literal', 42", ["ada@example.com"])

    [line] = slow_lines(json_log)
    assert line["level"] == "WARNING"
    assert line["duration_ms"] >= 100
    assert line["statement"] == "SELECT pg_sleep(?), %s::text, ?, ?"
    assert "ada@example.com" not in str(line) and "inline-literal" not in str(line)


def test_fast_statements_are_not_logged(db, json_log):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")

    assert slow_lines(json_log) == []


def test_the_timer_is_installed_once_and_outlives_a_temporary_execute_wrapper(transactional_db):
    connection.close()
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy), connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # connects inside the block: the timer is added then
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")

    assert seen == ["SELECT 1"]
    assert connection.execute_wrappers == [slow_queries._timer]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            'SELECT "a"."id" FROM "inventory_stocklevel" a ORDER BY 1 FOR UPDATE OF "inventory_stocklevel"',
            ("inventory_stocklevel", "select_for_update"),
        ),
        ('SELECT * FROM "orders_order" WHERE id = %s FOR UPDATE', ("orders_order", "select_for_update")),
        ('SELECT * FROM "orders_order" FOR UPDATE OF "orders_order" SKIP LOCKED', None),
        ('SELECT * FROM "orders_order" FOR UPDATE NOWAIT', None),
        ("UPDATE inventory_stocklevel SET reserved = reserved + %s WHERE id = %s", ("inventory_stocklevel", "update")),
        ('  UPDATE "orders_order" SET "status" = %s', ("orders_order", "update")),
        ("SELECT pg_advisory_xact_lock(%s)", ("advisory", "advisory")),
        ("SELECT pg_try_advisory_xact_lock(%s)", None),
        ("SELECT orders_place_order(%s, %s, %s::jsonb)", ("orders_place_order", "function")),
        ('SELECT "id" FROM "inventory_product" WHERE "sku" = %s', None),
    ],
)
def test_which_statements_count_as_lock_waits(sql, expected):
    assert lock_kind(sql) == expected


def test_statement_shapes_fold_value_lists_and_literals():
    sql = """SELECT "t"."id", "t2"."col1" FROM "t"  WHERE "t"."id" IN (%s, %s, %s)
             AND "t"."name" = 'it''s' AND "t"."n" > -3.5 LIMIT 21"""

    assert statement_shape(sql) == (
        'SELECT "t"."id", "t2"."col1" FROM "t" WHERE "t"."id" IN (%s, ...) AND "t"."name" = ? AND "t"."n" > ? LIMIT ?'
    )
    assert statement_shape("SELECT " + "x, " * 100 + "y", max_chars=20) == "SELECT x, x, x, x, x ..."
