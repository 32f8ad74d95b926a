"""project.db.transactions's retries against real PostgreSQL locks: what is retried, how often, and what is not."""

import pytest
from django.db import OperationalError, connection, transaction
from prometheus_client import REGISTRY

from project.db.transactions import LOCK_RETRY_ATTEMPTS, Retry, atomic_with_retry, retry_lock_errors
from project.errors import LockTimeout
from tests.factories import WarehouseFactory
from tests.support import other_connection


def retries(service: str, cause: str) -> float:
    return REGISTRY.get_sample_value("stockroom_lock_retries_total", {"service": service, "cause": cause}) or 0.0


def _lock_main_warehouse(calls: list) -> None:
    calls.append(1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '20ms'")
        cursor.execute("SELECT id FROM inventory_warehouse WHERE code = 'MAIN' FOR UPDATE")


@pytest.mark.django_db(transaction=True)
def test_a_lock_held_elsewhere_is_retried_then_becomes_lock_timeout():
    WarehouseFactory(code="MAIN")
    before = retries("test_lock_held", "LockNotAvailable")
    calls = []
    with other_connection() as other:
        other.execute("SELECT id FROM inventory_warehouse WHERE code = 'MAIN' FOR UPDATE")

        with pytest.raises(LockTimeout):
            retry_lock_errors(lambda: _lock_main_warehouse(calls), name="test_lock_held")

    assert len(calls) == LOCK_RETRY_ATTEMPTS
    assert retries("test_lock_held", "LockNotAvailable") - before == LOCK_RETRY_ATTEMPTS - 1
    _lock_main_warehouse(calls)  # released with the other session: the lock is free again


def test_retry_runs_the_whole_call_again_until_it_returns():
    outcomes = iter([Retry("read changed"), Retry("read changed"), "placed"])

    def run():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    before = retries("test_retry_twice", "Retry")
    assert retry_lock_errors(run, name="test_retry_twice") == "placed"
    assert retries("test_retry_twice", "Retry") - before == 2


@pytest.mark.django_db(transaction=True)
def test_an_error_that_is_not_about_locks_is_not_retried():
    calls = []

    def run():
        calls.append(1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '10ms'")
            cursor.execute("SELECT pg_sleep(1)")

    with pytest.raises(OperationalError, match="statement timeout"):
        retry_lock_errors(run, name="test_not_a_lock")
    assert calls == [1]


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_caller_owns_the_retries():
    calls = []
    service = atomic_with_retry(lambda: _lock_main_warehouse(calls))
    WarehouseFactory(code="MAIN")
    with other_connection() as other:
        other.execute("SELECT id FROM inventory_warehouse WHERE code = 'MAIN' FOR UPDATE")

        with pytest.raises(OperationalError), transaction.atomic():
            service()
        assert calls == [1]

        with pytest.raises(LockTimeout):
            service()
        assert len(calls) == 1 + LOCK_RETRY_ATTEMPTS


@pytest.mark.django_db(transaction=True)
def test_a_service_may_take_more_attempts_than_the_default():
    calls = []

    @atomic_with_retry(attempts=LOCK_RETRY_ATTEMPTS + 3)
    def lost_every_time():
        calls.append(1)
        raise Retry("lost")

    with pytest.raises(LockTimeout):
        lost_every_time()
    assert len(calls) == LOCK_RETRY_ATTEMPTS + 3
