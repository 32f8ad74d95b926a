"""project.db.backend: the pool's connection check (no round trip for a healthy connection, and a
connection whose server went away is dropped before a request can use it), the pool's
reconnection attempts kept at most their ceiling apart, the instrumented cursor class built
once, still counting every statement, and the prepared cursor."""

import select

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from prometheus_client import REGISTRY

from project.db.backend.health import check_pooled_connection
from project.db.backend.pool import ReconnectingPool
from tests.support import TcpProxy, other_connection, wait_for


def _last_query(pid: int) -> str:
    with other_connection(autocommit=True) as watcher:
        return watcher.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def _terminate(pids: list[int]) -> None:
    with other_connection(autocommit=True) as killer:
        for pid in pids:
            # The second argument waits (ms) until the backend has gone, so its socket is closed.
            killer.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


@pytest.mark.django_db
def test_a_healthy_idle_connection_passes_without_a_round_trip():
    with other_connection(autocommit=True) as conn:
        conn.execute("SELECT 'the last statement before the check'")
        check_pooled_connection(conn)
        check_pooled_connection(conn)
        # psycopg_pool's own check would have sent an empty query, and the server would show it.
        assert _last_query(conn.info.backend_pid) == "SELECT 'the last statement before the check'"


@pytest.mark.django_db
def test_a_connection_whose_backend_was_terminated_fails_the_check():
    with other_connection(autocommit=True) as conn:
        conn.execute("SELECT 1")
        _terminate([conn.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            check_pooled_connection(conn)


@pytest.mark.django_db
def test_a_connection_with_a_harmless_message_waiting_is_checked_the_slow_way_and_passes():
    with other_connection(autocommit=True) as conn, other_connection(autocommit=True) as sender:
        conn.execute("LISTEN stockroom_pool_check")
        sender.execute("NOTIFY stockroom_pool_check")
        # The listening backend sends the notification on its own time after NOTIFY commits (on a
        # busy machine, after the sender's next statement): wait until it is on conn's socket.
        wait_for(lambda: select.select([conn.fileno()], [], [], 0.1)[0], timeout=10, what="the notification")
        check_pooled_connection(conn)
        assert _last_query(conn.info.backend_pid) == ""
        assert conn.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.django_db(transaction=True)
def test_the_django_pool_lends_connections_through_this_check():
    if not connection.settings_dict["OPTIONS"].get("pool"):
        pytest.skip("runs with the pool (the test settings keep it on)")
    connection.close()  # Django's connection back to the pool
    pool = connection.pool
    assert isinstance(pool, ReconnectingPool)
    assert pool.max_reconnect_delay == settings.DB_POOL_MAX_RECONNECT_DELAY
    idle = max(pool.get_stats()["pool_available"], 1)  # earlier tests may have grown the pool
    held = [pool.getconn() for _ in range(idle)]  # every idle connection, so all get marked
    for conn in held:
        conn.execute("SELECT 'lent by the pool'")
    for conn in held:
        pool.putconn(conn)
    # Lent again: each passed the check; psycopg_pool's own check would show "" as its last query.
    held = [pool.getconn() for _ in range(idle)]
    try:
        assert {_last_query(conn.info.backend_pid) for conn in held} == {"SELECT 'lent by the pool'"}
    finally:
        for conn in held:
            pool.putconn(conn)


@pytest.mark.django_db
def test_the_pool_tries_to_reconnect_at_most_its_ceiling_apart_and_serves_once_the_database_is_back():
    params = connection.get_connection_params()
    proxy = TcpProxy(params["host"] or "127.0.0.1", int(params["port"] or 5432)).start()
    proxy.cut()  # the database is away: every connection attempt is refused
    pool = ReconnectingPool(
        kwargs={**params, "host": "127.0.0.1", "port": proxy.port, "autocommit": True},
        min_size=1,
        max_size=1,
        open=False,
        name="reconnect-test",
        max_reconnect_delay=0.5,
    )
    try:
        pool.open(wait=False)
        # Attempts at 0, 1, 1.5, 2, 2.5 ... s. psycopg_pool alone doubles the wait (0, 1, 3, 7,
        # 15, 31 ... s): it fails its seventh attempt only after a minute.
        wait_for(lambda: pool.get_stats().get("connections_errors", 0) >= 7, timeout=20, what="seven attempts")
        proxy.restore()
        with pool.connection(timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
        proxy.close()


@pytest.mark.django_db
def test_the_instrumented_cursor_class_is_built_once_and_still_counts_statements():
    first = connection.get_connection_params()["cursor_factory"]
    assert connection.get_connection_params()["cursor_factory"] is first
    labels = {"alias": "default", "vendor": "postgresql"}
    before = REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0

    with connection.cursor() as cursor:
        assert isinstance(cursor.cursor, first)
        cursor.execute("SELECT 1")

    assert REGISTRY.get_sample_value("django_db_execute_total", labels) - before == 1


@pytest.mark.django_db
def test_a_prepared_cursor_s_statement_is_prepared_after_five_runs_and_each_run_is_counted():
    labels = {"alias": "default", "vendor": "postgresql"}
    before = REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0

    for n in range(6):
        with connection.prepared_cursor() as cursor:
            cursor.execute("SELECT %s::int + 1 AS stockroom_prepared_probe", [n])
            assert cursor.fetchone() == (n + 1,)

    assert REGISTRY.get_sample_value("django_db_execute_total", labels) - before == 6
    with connection.cursor() as cursor:  # Django's own cursor binds on the client: never prepared
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%_probe%"])
        assert [row[0] for row in cursor.fetchall()] == ["SELECT $1::int + 1 AS stockroom_prepared_probe"]


def test_django_keeps_its_pools_where_the_backend_reads_them():
    """The private Django API our backend relies on (project.db.backend.base): Django's own `pool`
    property stores the pool it builds in the class-level `_connection_pools` under the alias and
    hands it `_configure_connection`. If Django changes either, this fails before production does."""
    from django.db.backends.postgresql import base as django_base

    from project.db.backend.base import DatabaseWrapper

    alias = "pool_internals_probe"
    params = {**settings.DATABASES["default"], "OPTIONS": {"pool": {"min_size": 0, "max_size": 1}}}
    params.update(ENGINE="django.db.backends.postgresql", CONN_MAX_AGE=0)
    plain = django_base.DatabaseWrapper(params, alias)
    ours = DatabaseWrapper({**params, "ENGINE": "project.db.backend"}, alias)
    try:
        assert ours.opened_pool() is None  # reading never builds one
        pool = plain.pool
        assert django_base.DatabaseWrapper._connection_pools[alias] is pool
        assert pool._configure == plain._configure_connection
        assert ours.opened_pool() is pool  # one registry, shared with Django's own class
    finally:
        django_base.DatabaseWrapper._connection_pools.pop(alias, None)
