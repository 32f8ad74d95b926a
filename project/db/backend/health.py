"""The pool's check of a connection before it is lent, without a round trip when it is healthy.

psycopg_pool's own check (`ConnectionPool.check_connection`, which Django installs when
CONN_HEALTH_CHECKS is on) sends an empty query on every checkout: a round trip to PostgreSQL
per request. An idle connection in autocommit has nothing to read, so polling its socket tells
the same thing for free: a server that closed or terminated it leaves the socket readable (the
FATAL message, then end of file). Only then, or when the connection is in an unexpected state,
does the check fall back to the round trip, which raises on a broken connection and consumes
anything harmless the server sent meanwhile (a notice, a parameter status).
"""

import select

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool


def check_pooled_connection(conn: psycopg.Connection) -> None:
    """Return quietly if `conn` can be lent; raise psycopg.OperationalError if it is broken."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    if conn.info.transaction_status == pq.TransactionStatus.IDLE and not _readable(conn.fileno()):
        return
    ConnectionPool.check_connection(conn)


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
