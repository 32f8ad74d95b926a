"""Time every SQL statement: log the slow ones, and observe lock waits.

`StatementTimer` is a Django execute wrapper, installed on each connection wrapper when it first
connects (the `connection_created` signal; the wrapper list lives on the thread's
DatabaseWrapper, so it is installed once and survives pooled reconnects). For a fast statement
it costs two clock reads, a comparison and a few substring checks.

- A statement slower than SLOW_QUERY_MS (default 200) is logged at WARNING by
  `stockroom.slow_query` with its duration and its shape: the SQL with its parameters left out
  (Django sends them apart, as %s), literals inlined by hand replaced by `?`, `IN (%s, %s, ...)`
  folded, whitespace squeezed, cut at SLOW_QUERY_MAX_CHARS. Parameters never reach the log:
  they hold addresses, emails and key hashes. It is also counted in stockroom_slow_queries_total.
- Statements that take row or advisory locks and may wait for them feed
  stockroom_lock_wait_seconds{table, kind}: SELECT ... FOR UPDATE/SHARE (not SKIP LOCKED or NOWAIT,
  which never wait), UPDATE, pg_advisory_xact_lock, and calls of the SQL functions that lock
  (kind `function`, e.g. orders_place_order). That is where a hot SKU's buyers queue.
"""

import logging
import re
import time

from django.conf import settings
from django.db.backends.signals import connection_created

from project.observability.metrics import LOCK_WAIT_SECONDS, SLOW_QUERIES

logger = logging.getLogger("stockroom.slow_query")

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER_LITERAL = re.compile(r"(?<![\w$.\"])-?\d+(?:\.\d+)?(?![\w\"])")
_PLACEHOLDER_LIST = re.compile(r"\(\s*%s(?:\s*,\s*%s)+\s*\)")
_WHITESPACE = re.compile(r"\s+")
_LOCKED_TABLE = re.compile(r'FOR (?:NO KEY )?(?:UPDATE|SHARE) OF "?(\w+)"?')
_FROM_TABLE = re.compile(r'\bFROM\s+"?(\w+)"?', re.IGNORECASE)
_UPDATE_TABLE = re.compile(r'^\s*UPDATE\s+"?(\w+)"?', re.IGNORECASE)
# SQL functions that run a whole locking transaction step in one statement: their time is the
# lock waits plus their work (an app's SQL function that places an order locks stock levels inside).
# Apps name theirs from their AppConfig.ready() (register_locking_functions).
LOCKING_FUNCTIONS: tuple[str, ...] = ()


def register_locking_functions(*names: str) -> None:
    """Observe calls of these SQL functions as lock waits of kind `function`."""
    global LOCKING_FUNCTIONS
    LOCKING_FUNCTIONS = tuple(dict.fromkeys((*LOCKING_FUNCTIONS, *(f"{name}(" for name in names))))


def statement_shape(sql: str, max_chars: int | None = None) -> str:
    """The statement without its values: safe to log, and equal for every run of the same query."""
    shape = _STRING_LITERAL.sub("?", sql)
    shape = _NUMBER_LITERAL.sub("?", shape)
    shape = _PLACEHOLDER_LIST.sub("(%s, ...)", shape)
    shape = _WHITESPACE.sub(" ", shape).strip()
    limit = max_chars or settings.SLOW_QUERY_MAX_CHARS
    return shape if len(shape) <= limit else shape[:limit] + " ..."


def lock_kind(sql: str) -> tuple[str, str] | None:
    """(table, kind) when `sql` takes locks it may wait for, else None. Cheap on the common SELECT."""
    head = sql.lstrip()[:6].upper()
    if head == "UPDATE":
        match = _UPDATE_TABLE.match(sql)
        return (match.group(1) if match else "unknown", "update")
    if "pg_advisory_xact_lock(" in sql:
        return ("advisory", "advisory")
    for function in LOCKING_FUNCTIONS:
        if function in sql:
            return (function.rstrip("("), "function")
    if " FOR UPDATE" in sql or " FOR NO KEY UPDATE" in sql or " FOR SHARE" in sql:
        if "SKIP LOCKED" in sql or "NOWAIT" in sql:
            return None
        match = _LOCKED_TABLE.search(sql) or _FROM_TABLE.search(sql)
        return (match.group(1) if match else "unknown", "select_for_update")
    return None


class StatementTimer:
    """The execute wrapper (see the module docstring). One per process; reads its threshold once."""

    def __init__(self, threshold_ms: float):
        self.threshold = threshold_ms / 1000.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            if isinstance(sql, str):
                locking = lock_kind(sql)
                if locking is not None:
                    LOCK_WAIT_SECONDS.labels(table=locking[0], kind=locking[1]).observe(elapsed)
                if elapsed >= self.threshold:
                    self._log(sql, many, params, context, elapsed)

    def _log(self, sql, many, params, context, elapsed) -> None:
        alias = getattr(context.get("connection"), "alias", "default")
        SLOW_QUERIES.labels(alias=alias).inc()
        duration_ms = round(elapsed * 1000, 1)
        extra = {"duration_ms": duration_ms, "statement": statement_shape(sql), "db_alias": alias}
        if many:
            try:
                extra["executions"] = len(params)
            except TypeError:  # an iterator of parameter sets
                extra["executions"] = None
        logger.warning("slow query %.1f ms", duration_ms, extra=extra)


_timer: StatementTimer | None = None


def _install_on(sender=None, connection=None, **kwargs) -> None:
    if _timer is not None and connection is not None and _timer not in connection.execute_wrappers:
        # First, not last: `connection.execute_wrapper()` blocks pop the last entry when they end,
        # and a connection opened inside one of them must not lose the wrong wrapper.
        connection.execute_wrappers.insert(0, _timer)


def install() -> None:
    """Time every statement of every connection this process opens (ProjectConfig.ready)."""
    global _timer
    _timer = StatementTimer(settings.SLOW_QUERY_MS)
    connection_created.connect(_install_on, dispatch_uid="stockroom.slow_queries")
