"""The outbox end to end: enqueue in the change's transaction, a real relay, a real worker.

Outages cut a TCP proxy the test owns in front of the machine's Redis, never Redis itself.
"""

import subprocess
import sys
import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from inventory import services as stock
from orders import services
from orders.api import render_order
from orders.models import Order
from project.celery import app
from project.observability.logs import request_id_var
from project.outbox.models import OutboxMessage
from project.outbox.relay import OUTBOX_RELAY_FAILURES, OutboxRelay
from project.outbox.services import OutboxTask, outbox_enqueue, outbox_prune
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import (
    LogCapture,
    RelayThread,
    TcpProxy,
    broker_host_port,
    broker_url_via,
    running_worker,
)
from tests.support import ROOT, other_connection, stop_process, subprocess_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

State = OutboxMessage.State
RUNS: list[str] = []  # what the test tasks below did, in this process (the worker is a thread)


@app.task(name="tests.outbox.record", base=OutboxTask)
def record(word: str) -> str:
    RUNS.append(word)
    return word


@app.task(name="tests.outbox.always_fails", base=OutboxTask)
def always_fails() -> None:
    RUNS.append("failed")
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def _clean_runs():
    RUNS.clear()
    mail.outbox = []


def _place_order(user=None) -> int:
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    result = services.order_place(
        user=user or UserFactory(),
        lines=[services.OrderLineRequest("MUG", 1)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint="mug",
    )
    return Order.objects.get(number=result.body["number"]).pk


def _placed_message() -> OutboxMessage:
    return OutboxMessage.objects.get(task="orders.send_order_email", kwargs__kind="placed")


def _broker_failures() -> float:
    return OUTBOX_RELAY_FAILURES.labels(cause="broker")._value.get()


def _listener() -> psycopg.Connection:
    listener = other_connection(autocommit=True)
    listener.execute("LISTEN stockroom_outbox")
    return listener


# --- enqueue ---------------------------------------------------------------------------------------


def test_enqueue_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError, match="inside a transaction"):
        outbox_enqueue(task="tests.outbox.record", kwargs={"word": "x"})
    assert not OutboxMessage.objects.exists()


def test_enqueue_writes_the_row_with_the_request_id_and_notifies_only_at_commit(settings):
    settings.OUTBOX_NOTIFY_INTERVAL_MS = 0
    listener = _listener()
    token = request_id_var.set("req-outbox-1")
    try:
        with transaction.atomic():
            message_id = outbox_enqueue(task="tests.outbox.record", kwargs={"word": "hello"})
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # not before commit
        notified = list(listener.notifies(timeout=5, stop_after=1))
        with pytest.raises(RuntimeError), transaction.atomic():
            outbox_enqueue(task="tests.outbox.record", kwargs={"word": "rolled back"})
            raise RuntimeError("the change fails")
        after_rollback = list(listener.notifies(timeout=0.3, stop_after=1))
    finally:
        request_id_var.reset(token)
        listener.close()

    assert [n.channel for n in notified] == ["stockroom_outbox"]
    assert after_rollback == []
    row = OutboxMessage.objects.get()
    assert row.pk == message_id
    assert (row.task, row.kwargs, row.request_id, row.state, row.attempts) == (
        "tests.outbox.record",
        {"word": "hello"},
        "req-outbox-1",
        State.PENDING,
        0,
    )


def test_a_process_notifies_at_most_once_per_interval(settings):
    settings.OUTBOX_NOTIFY_INTERVAL_MS = 0
    listener = _listener()
    try:
        with transaction.atomic():
            outbox_enqueue(task="tests.outbox.record", kwargs={"word": "first"})  # interval 0: notifies
        settings.OUTBOX_NOTIFY_INTERVAL_MS = 60_000
        for word in ("second", "third"):
            with transaction.atomic():
                outbox_enqueue(task="tests.outbox.record", kwargs={"word": word})
        notified = list(listener.notifies(timeout=1, stop_after=3))
    finally:
        listener.close()

    assert len(notified) == 1
    assert OutboxMessage.objects.count() == 3


def test_arguments_that_are_not_json_are_refused_in_the_callers_transaction():
    from project.errors import InvalidInput

    with pytest.raises(InvalidInput), transaction.atomic():
        outbox_enqueue(task="tests.outbox.record", kwargs={"word": object()})
    assert not OutboxMessage.objects.exists()


# --- delivery ----------------------------------------------------------------------------------------


def test_placing_an_order_emails_the_customer_through_relay_and_worker_with_the_request_id():
    customer = UserFactory(email="ada@example.com")
    with running_worker(), LogCapture() as logs, RelayThread() as relay:
        token = request_id_var.set("req-order-42")
        try:
            order_id = _place_order(customer)
        finally:
            request_id_var.reset(token)
        wait_for(lambda: _placed_message().state == State.DONE, timeout=20, what="the email task to finish")

    assert relay.error is None
    message = _placed_message()
    assert (message.attempts, message.request_id, message.kwargs) == (
        1,
        "req-order-42",
        {"order_id": order_id, "kind": "placed"},
    )
    assert message.sent_at is not None and message.done_at is not None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    assert "reserved" in mail.outbox[0].subject
    sent = next(r for r in logs.records if r.getMessage().startswith("order email placed sent"))
    assert sent.request_id == "req-order-42"


def test_relay_stopped_and_redis_unreachable_at_commit_delivers_exactly_once_after_both_return():
    proxy = TcpProxy(*broker_host_port()).start()
    proxy.cut()
    try:
        with running_worker():
            order_id = _place_order()  # commits while no relay runs and the relay's Redis is unreachable
            assert _placed_message().state == State.PENDING

            failures_before = _broker_failures()
            with RelayThread(broker_url=broker_url_via(proxy)) as relay:
                wait_for(
                    lambda: _broker_failures() >= failures_before + 2,
                    timeout=20,
                    what="the relay to fail to publish (twice) while Redis is unreachable",
                )
                assert _placed_message().state == State.PENDING
                assert mail.outbox == []

                proxy.restore()
                wait_for(lambda: _placed_message().state == State.DONE, timeout=30, what="delivery after Redis is back")
                rounds = relay.relay.rounds
                wait_for(lambda: relay.relay.rounds >= rounds + 3, timeout=20, what="more relay rounds")
            assert relay.error is None
    finally:
        proxy.close()

    message = _placed_message()
    assert message.attempts == 1  # published once: broker failures never count as deliveries
    assert [m.subject for m in mail.outbox] == [mail.outbox[0].subject]
    assert str(order_id) and len(mail.outbox) == 1


class RelayCrashed(Exception):
    pass


class CrashingRelay(OutboxRelay):
    """Dies after publishing and before its transaction marks the rows sent (the transaction is
    rolled back, as a killed process's would be)."""

    def _mark_sent(self, messages):
        raise RelayCrashed()


def test_relay_crash_after_publish_redelivers_and_the_tasks_effect_happens_once():
    _place_order()

    with pytest.raises(RelayCrashed):
        CrashingRelay().relay_batch()
    assert _placed_message().state == State.PENDING  # the crash rolled the claim back
    assert OutboxRelay().relay_batch() == 1  # a new relay publishes it again
    assert _placed_message().state == State.SENT
    connection.close()

    with running_worker(), LogCapture() as logs:
        wait_for(lambda: _placed_message().state == State.DONE, timeout=20, what="the first delivery")
        wait_for(
            lambda: any("already done; skipped" in m for m in logs.messages()),
            timeout=20,
            what="the second delivery to skip itself",
        )

    assert len(mail.outbox) == 1
    assert _placed_message().attempts == 1


def test_a_message_lost_by_the_broker_is_published_again_when_its_lease_runs_out():
    with transaction.atomic():
        message_id = outbox_enqueue(task="tests.outbox.record", kwargs={"word": "lost"})
    assert OutboxRelay().relay_batch() == 1
    app.control.purge()  # what a Redis restart does: this Redis keeps nothing on disk
    OutboxMessage.objects.filter(pk=message_id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    with running_worker(), RelayThread():
        wait_for(lambda: OutboxMessage.objects.get(pk=message_id).state == State.DONE, timeout=20, what="redelivery")

    assert RUNS == ["lost"]
    assert OutboxMessage.objects.get(pk=message_id).attempts == 2


def test_a_failing_task_is_retried_with_backoff_then_dead(settings):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    settings.OUTBOX_RETRY_BACKOFF_SECONDS = 0
    with transaction.atomic():
        message_id = outbox_enqueue(task="tests.outbox.always_fails")

    with running_worker(), RelayThread():
        wait_for(lambda: OutboxMessage.objects.get(pk=message_id).state == State.DEAD, timeout=30, what="dead")

    dead = OutboxMessage.objects.get(pk=message_id)
    assert dead.attempts == 3
    assert RUNS == ["failed"] * 3
    assert "RuntimeError: boom" in dead.last_error


def test_a_sent_message_never_done_after_max_deliveries_becomes_dead(settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    with transaction.atomic():
        message_id = outbox_enqueue(task="tests.outbox.record", kwargs={"word": "never"})
    OutboxMessage.objects.filter(pk=message_id).update(
        state=State.SENT, attempts=2, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )

    assert OutboxRelay().relay_batch() == 1

    dead = OutboxMessage.objects.get(pk=message_id)
    assert dead.state == State.DEAD
    assert "Not done after 2 deliveries" in dead.last_error


def test_a_task_called_without_the_outbox_header_just_runs():
    assert record("direct") == "direct"
    assert RUNS == ["direct"]


def test_two_relays_at_once_publish_each_message_once():
    with transaction.atomic():
        for n in range(40):
            outbox_enqueue(task="tests.outbox.record", kwargs={"word": f"w{n}"})
    barrier = threading.Barrier(2)
    claimed = [0, 0]

    def relay(i):
        try:
            barrier.wait(timeout=10)
            while True:
                count = OutboxRelay(batch_size=5).relay_batch()
                claimed[i] += count
                if count == 0:
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=relay, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(claimed) == 40
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    with running_worker():
        wait_for(lambda: len(RUNS) == 40, timeout=30, what="all tasks to run")
    assert sorted(RUNS) == sorted(f"w{n}" for n in range(40))


def test_the_relay_command_runs_as_its_own_process_and_stops_on_sigterm():
    with transaction.atomic():
        message_id = outbox_enqueue(task="tests.outbox.record", kwargs={"word": "from a process"})
    settings_dict = connection.settings_dict
    database_url = (
        f"postgres://{settings_dict['USER']}@{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}"
        f"/{settings_dict['NAME']}"
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_outbox_relay"],
        cwd=ROOT,
        env=subprocess_env(
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="project.settings.test",
            DB_POOL="0",
            RELAY_METRICS_PORT="0",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with running_worker():
            wait_for(lambda: OutboxMessage.objects.get(pk=message_id).state == State.DONE, timeout=30, what="delivery")
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        stop_process(proc)
    assert RUNS == ["from a process"]


# --- housekeeping ---------------------------------------------------------------------------------------


def test_prune_deletes_only_done_messages_older_than_the_cutoff():
    with transaction.atomic():
        old_done, new_done, dead = (outbox_enqueue(task="tests.outbox.record", kwargs={"word": w}) for w in "abc")
    long_ago = timezone.now() - timedelta(days=10)
    OutboxMessage.objects.filter(pk=old_done).update(state=State.DONE, done_at=long_ago)
    OutboxMessage.objects.filter(pk=new_done).update(state=State.DONE, done_at=timezone.now())
    OutboxMessage.objects.filter(pk=dead).update(state=State.DEAD, next_attempt_at=long_ago)

    assert outbox_prune(older_than_days=7) == 1

    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {new_done, dead}
