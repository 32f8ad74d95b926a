"""Migrations keep their own past: each one that installs SQL carries the SQL of its own day
(<app>/migrations/sql/), its reverse restores the definition before it, and a scratch database
goes from zero to the latest schema, back to zero and forward again."""

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.support import ROOT, subprocess_env

SQL_DIR = ROOT / "orders" / "migrations" / "sql"
LATEST = "0017_order_webhook_events"
# Our SQL functions: the orders functions, and the one writer of each row SQL and Python share.
OURS = ("orders\\_%", "outbox\\_%", "inventory\\_%", "webhook\\_%")
# Reversed in this order: each app before the apps it depends on.
APPS_TO_ZERO = [
    "admin", "orders", "inventory", "django_celery_beat", "users", "project", "sessions", "auth", "contenttypes",
]  # fmt: skip


def sql_of(migration: str) -> str:
    return (SQL_DIR / f"{migration}.sql").read_text()


def test_the_current_sql_files_are_what_the_latest_migrations_install():
    # A change to orders/placement/placement.sql, orders/expiry.sql or orders/events.sql needs a new
    # migration carrying the new text in orders/migrations/sql/ (and restoring this one on its way back).
    placement = (ROOT / "orders" / "placement" / "placement.sql").read_text()
    expiry = (ROOT / "orders" / "expiry.sql").read_text()
    events = (ROOT / "orders" / "events.sql").read_text()
    assert placement + expiry + events == sql_of(LATEST)


@pytest.fixture
def scratch_database():
    """A database of its own on the test server (never the test database), dropped afterwards."""
    url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stockroom"))
    name = f"stockroom_migrations_{uuid.uuid4().hex[:10]}"
    admin_url = urlunsplit(url._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(url._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", *args, "--verbosity", "0", "--no-input"],
        cwd=ROOT,
        env=subprocess_env(DATABASE_URL=url, DB_POOL="0"),
        check=True,
        timeout=120,
    )


def functions(url: str) -> dict[str, str]:
    """Our SQL functions: "name(argument count)" -> body."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            """
            SELECT p.proname || '(' || p.pronargs || ')', p.prosrc
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.proname LIKE ANY (%s)
            """,
            [list(OURS)],
        ).fetchall()
    return dict(rows)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        return {row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def installed_by(url: str, signature: str) -> str:
    """Which migration's SQL holds the body of `signature` in the scratch database."""
    body = functions(url)[signature]
    owners = [path.stem for path in sorted(ROOT.glob("*/migrations/sql/*.sql")) if body in path.read_text()]
    assert owners, f"{signature}'s body is in no migration's SQL"
    return owners[-1]


@pytest.mark.slow
def test_a_database_migrates_from_zero_to_latest_back_to_zero_and_forward_again(scratch_database):
    url = scratch_database

    migrate(url)
    assert set(functions(url)) == {
        "orders_place_order(15)", "orders_expire_chunk(7)", "orders_iso_time(1)", "outbox_write(5)",
        "inventory_ledger_write(10)", "inventory_stockmovement_append_only(0)", "inventory_hot_take(6)",
        "inventory_buckets_reclaim(4)", "orders_webhook_payload(1)", "orders_webhook_emit(2)",
        "webhook_wanted(1)", "webhook_write(4)",
    }  # fmt: skip
    assert installed_by(url, "orders_place_order(15)") == LATEST
    assert installed_by(url, "orders_expire_chunk(7)") == LATEST
    assert installed_by(url, "outbox_write(5)") == "0003_outbox_write"
    assert installed_by(url, "inventory_ledger_write(10)") == "0011_ledger_write_backordered"
    assert installed_by(url, "inventory_hot_take(6)") == "0009_bucket_slots"

    assert installed_by(url, "orders_webhook_emit(2)") == LATEST
    assert installed_by(url, "webhook_write(4)") == "0005_webhook_write"

    migrate(url, "orders", "0016")
    assert installed_by(url, "orders_place_order(15)") == "0016_place_order_backorders_and_limits"
    assert {"orders_webhook_emit(2)", "orders_webhook_payload(1)"}.isdisjoint(functions(url))
    migrate(url, "orders", "0014")
    assert installed_by(url, "orders_place_order(15)") == "0014_place_order_draws_one_bucket"
    migrate(url, "inventory", "0010")
    assert "inventory_ledger_write(10)" not in functions(url)
    assert installed_by(url, "inventory_ledger_write(9)") == "0008_stock_buckets"
    migrate(url, "orders", "0013")
    assert installed_by(url, "orders_place_order(15)") == "0013_place_order_takes_from_buckets"
    migrate(url, "inventory", "0008")
    assert "inventory_hot_take(6)" not in functions(url)
    assert installed_by(url, "inventory_hot_take(5)") == "0008_stock_buckets"
    migrate(url, "orders", "0012")
    assert installed_by(url, "orders_place_order(15)") == "0011_place_and_expire_through_the_writers"
    assert installed_by(url, "orders_expire_chunk(7)") == "0011_place_and_expire_through_the_writers"
    migrate(url, "inventory", "0007")
    assert {"inventory_hot_take(5)", "inventory_buckets_reclaim(4)", "inventory_ledger_write(9)"}.isdisjoint(
        functions(url)
    )
    assert installed_by(url, "inventory_ledger_write(8)") == "0006_ledger_write"
    migrate(url, "orders", "0010")
    assert installed_by(url, "orders_place_order(15)") == "0009_place_order_reserves_last"
    assert installed_by(url, "orders_expire_chunk(7)") == "0005_expire_chunk_function"
    migrate(url, "project", "0004")
    assert "webhook_write(4)" not in functions(url)
    migrate(url, "project", "0002")
    assert "outbox_write(5)" not in functions(url)
    migrate(url, "inventory", "0005")
    assert "inventory_ledger_write(8)" not in functions(url)
    migrate(url, "orders", "0008")
    assert installed_by(url, "orders_place_order(15)") == "0007_place_order_claims_the_key"
    migrate(url, "orders", "0006")
    assert "orders_place_order(15)" not in functions(url)
    assert installed_by(url, "orders_place_order(13)") == "0006_place_order_sku_probe"
    migrate(url, "orders", "0005")
    assert installed_by(url, "orders_place_order(13)") == "0003_place_order_function"
    migrate(url, "orders", "0004")
    assert "orders_expire_chunk(7)" not in functions(url)

    for app in APPS_TO_ZERO:
        migrate(url, app, "zero")
    assert functions(url) == {}
    assert tables(url) == {"django_migrations"}

    migrate(url)
    assert installed_by(url, "orders_place_order(15)") == LATEST
    assert installed_by(url, "orders_expire_chunk(7)") == LATEST
    assert installed_by(url, "outbox_write(5)") == "0003_outbox_write"
    assert installed_by(url, "inventory_ledger_write(10)") == "0011_ledger_write_backordered"


@pytest.mark.slow
def test_buckets_made_before_slots_are_numbered_per_level_in_id_order(scratch_database):
    url = scratch_database
    migrate(url, "inventory", "0008")
    with psycopg.connect(url) as connection:
        connection.execute(
            """
            INSERT INTO inventory_warehouse (code, name, priority, active, created_at)
            VALUES ('MAIN', 'Main', 1, true, now()), ('EAST', 'East', 2, true, now());
            INSERT INTO inventory_product (sku, name, description, price, active, low_stock_threshold,
                                           low_stock_alerted, version, stock_buckets, created_at, updated_at)
            VALUES ('HOT', 'Hot', '', 1, true, 0, false, 1, 3, now(), now());
            INSERT INTO inventory_stocklevel (product_id, warehouse_id, on_hand, reserved, version, updated_at)
            SELECT p.id, w.id, 10, 0, 1, now() FROM inventory_product p CROSS JOIN inventory_warehouse w;
            -- The two levels' buckets interleaved by id, as concurrent slow paths could make them.
            INSERT INTO inventory_stockbucket (level_id, units)
            SELECT s.id, 0 FROM generate_series(1, 3) AS g
             CROSS JOIN inventory_stocklevel s JOIN inventory_warehouse w ON w.id = s.warehouse_id
             WHERE g <= CASE w.code WHEN 'MAIN' THEN 3 ELSE 2 END
             ORDER BY g, s.id;
            """
        )
    migrate(url, "inventory", "0009")
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            """SELECT w.code, array_agg(b.slot ORDER BY b.id) FROM inventory_stockbucket b
                 JOIN inventory_stocklevel s ON s.id = b.level_id JOIN inventory_warehouse w ON w.id = s.warehouse_id
                GROUP BY w.code"""
        ).fetchall()
    assert dict(rows) == {"MAIN": [1, 2, 3], "EAST": [1, 2]}
