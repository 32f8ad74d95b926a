"""Transactions, bounded retries on lock errors, and transaction-scoped advisory locks.

A service called from an edge opens the outermost transaction through `atomic_with_retry`;
the retry lives there, so a deadlock or lock timeout re-runs the whole service, never half.
"""

import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection, transaction
from psycopg import errors as pg_errors

from project.errors import LockTimeout
from project.observability.metrics import record_retry

logger = logging.getLogger("stockroom.db")

LOCK_RETRY_ATTEMPTS = 4
LOCK_RETRY_BASE_SECONDS = 0.02
LOCK_RETRY_MAX_PAUSE_SECONDS = 0.32  # the longest pause between two attempts (the 4th's)

T = TypeVar("T")

RETRYABLE_PG_ERRORS = (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class Retry(Exception):
    """Raised inside a service when what it read changed under it; the whole service runs again."""


def is_lock_error(exc: BaseException) -> bool:
    """A lock timeout, deadlock or serialization failure: worth retrying (unlike an outage)."""
    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, RETRYABLE_PG_ERRORS)


def retry_cause(exc: BaseException) -> str:
    """The metric label of a retry: `Retry`, or PostgreSQL's error (LockNotAvailable, DeadlockDetected...)."""
    return "Retry" if isinstance(exc, Retry) else type(exc.__cause__).__name__


def retry_lock_errors(run: Callable[[], T], *, name: str, attempts: int = LOCK_RETRY_ATTEMPTS) -> T:
    """Call `run` until it returns; a lock timeout, deadlock or `Retry` calls it again after a
    jittered pause, anything else propagates. After the last of `attempts`: LockTimeout (503 with
    Retry-After). `run` must own its transaction (or run in autocommit), so a retry re-runs all
    of it."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except (OperationalError, Retry) as exc:
            if isinstance(exc, OperationalError) and not is_lock_error(exc):
                raise
            if attempt == attempts:
                logger.warning("%s gave up after %d attempts: %s", name, attempt, exc)
                raise LockTimeout() from exc
            record_retry(name, retry_cause(exc))
            pause = min(LOCK_RETRY_BASE_SECONDS * 2**attempt, LOCK_RETRY_MAX_PAUSE_SECONDS)
            time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def atomic_with_retry(fn: Callable | None = None, *, attempts: int = LOCK_RETRY_ATTEMPTS) -> Callable:
    """Run `fn` in its own transaction; retry lock timeouts, deadlocks and `Retry` with jitter.

    Inside an outer transaction it runs in a savepoint (a refusal undoes only its own writes)
    and does not retry: the outermost service owns the retries.
    After the last of `attempts` (`@atomic_with_retry(attempts=n)` for another number than
    LOCK_RETRY_ATTEMPTS), a lock error becomes LockTimeout (503 with Retry-After).
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            def run():
                with transaction.atomic():
                    return fn(*args, **kwargs)

            if connection.in_atomic_block:
                return run()
            return retry_lock_errors(run, name=fn.__qualname__, attempts=attempts)

        return wrapper

    return decorate if fn is None else decorate(fn)


def require_transaction(what: str) -> None:
    """Stock primitives change rows only inside their caller's transaction."""
    if not connection.in_atomic_block:
        raise RuntimeError(f"{what} must run inside a transaction opened by the calling service")


def raise_statement_timeout(milliseconds: int) -> None:
    """Let this transaction's statements run up to `milliseconds` (batch work: a request's
    statement_timeout, set per connection, is too short for it). Transaction-scoped, like SET LOCAL:
    the pooled connection's next user gets the ordinary limit back."""
    require_transaction("raise_statement_timeout")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{int(milliseconds)}ms"])


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock, from a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def advisory_xact_lock(name: str) -> None:
    """Block until this transaction holds the named lock; released at commit or rollback."""
    require_transaction("advisory_xact_lock")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(name)])


def try_advisory_xact_lock(name: str) -> bool:
    require_transaction("try_advisory_xact_lock")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [advisory_key(name)])
        return cursor.fetchone()[0]
