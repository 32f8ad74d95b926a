"""How an outbox task runs: its row is claimed in a short transaction, the task body (an email)
runs with no transaction open and no lock held, and the row is marked done in another short
transaction. Each email carries a Message-ID derived from its outbox message, the same at every
delivery. Each task kind has its own lease, derived from its own time limit.
"""

import threading
import uuid
from datetime import timedelta

import pytest
from django.core import mail
from django.core.mail import get_connection
from django.db import connection, transaction
from django.utils import timezone

from inventory import services as stock
from orders import services
from orders.api import render_order
from orders.emails import SEND_ORDER_EMAIL
from orders.models import Order
from orders.tasks import send_order_email
from project.celery import app
from project.outbox.models import OutboxMessage
from project.outbox.relay import OutboxRelay
from project.outbox.services import OutboxTask, outbox_claim, outbox_enqueue, task_lease_seconds
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import LogCapture, ProbingEmailBackend, RelayThread, running_worker
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

State = OutboxMessage.State
PROBING = "tests.project.outbox.support.ProbingEmailBackend"
IMPORT_TASK = "inventory.import_stock"


@pytest.fixture(autouse=True)
def _probing(settings):
    settings.EMAIL_BACKEND = PROBING
    ProbingEmailBackend.reset()
    mail.outbox = []
    yield
    ProbingEmailBackend.reset()
    app.control.purge()  # nothing of this test's left for the next test's worker


def _place_order() -> int:
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    result = services.order_place(
        user=UserFactory(email="ada@example.com"),
        lines=[services.OrderLineRequest("MUG", 1)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint="mug",
    )
    return Order.objects.get(number=result.body["number"]).pk


def _placed_message() -> OutboxMessage:
    return OutboxMessage.objects.get(task=SEND_ORDER_EMAIL, kwargs__kind="placed")


def _deliver(task, message: OutboxMessage, delivery_id: str):
    """One delivery of `message` as a worker runs it: the Celery request carries the task id and
    the relay's outbox header."""
    task.push_request(id=delivery_id, outbox_id=message.pk)
    try:
        return task(*message.args, **message.kwargs)
    finally:
        task.pop_request()
        connection.close()


# --- no transaction, no lock, while the email is sent -------------------------------------------------


def test_an_outbox_email_is_sent_with_no_transaction_open_and_no_lock_held():
    _place_order()

    with running_worker(), RelayThread() as relay:
        wait_for(lambda: _placed_message().state == State.DONE, timeout=20, what="the email to be sent")
    assert relay.error is None

    (probe,) = ProbingEmailBackend.probes
    assert probe["in_atomic_block"] is False
    assert probe["state"] != "idle in transaction"
    assert probe["locks"] == []  # the worker's session holds no lock at all while it sends
    assert probe["outbox_rows_lockable"] is True
    assert len(mail.outbox) == 1


def test_two_deliveries_at_once_send_one_email():
    _place_order()
    message = _placed_message()
    ProbingEmailBackend.pause = threading.Event()
    first_result = []
    first = threading.Thread(
        target=lambda: first_result.append(_deliver(send_order_email, message, "delivery-a")), daemon=True
    )

    first.start()
    assert ProbingEmailBackend.sending.wait(timeout=20), "the first delivery never started sending"
    with LogCapture() as logs:
        second = _deliver(send_order_email, message, "delivery-b")  # while the first is sending
    ProbingEmailBackend.pause.set()
    first.join(timeout=20)

    assert first_result == [True]
    assert second is None
    assert any("claimed by another delivery" in m for m in logs.messages())
    assert len(mail.outbox) == 1
    assert _placed_message().state == State.DONE


def test_a_claim_is_skipped_while_live_taken_over_by_its_own_delivery_and_taken_after_it_runs_out():
    with transaction.atomic():
        message_id = outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": 1, "kind": "placed"})

    assert outbox_claim(message_id=message_id, delivery_id="a", lease_seconds=600) is not None
    assert outbox_claim(message_id=message_id, delivery_id="b", lease_seconds=600) is None
    # The broker delivering the same Celery message again (its worker died): the same delivery.
    assert outbox_claim(message_id=message_id, delivery_id="a", lease_seconds=600) is not None
    row = OutboxMessage.objects.get(pk=message_id)
    assert row.next_attempt_at >= row.claimed_until  # the relay leaves a live claim alone

    OutboxMessage.objects.filter(pk=message_id).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert outbox_claim(message_id=message_id, delivery_id="b", lease_seconds=600) is not None
    assert OutboxMessage.objects.get(pk=message_id).claimed_by == "b"

    OutboxMessage.objects.filter(pk=message_id).update(state=State.DONE)
    assert outbox_claim(message_id=message_id, delivery_id="b", lease_seconds=600) is None


# --- a stable Message-ID -------------------------------------------------------------------------------


def test_the_message_id_of_an_email_is_the_same_at_every_delivery_of_its_message():
    order_id = _place_order()
    message = _placed_message()
    with transaction.atomic():
        other = outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": order_id, "kind": "paid"})

    # A crash between the effect and its record: the message is delivered (and sent) twice.
    assert _deliver(send_order_email, message, "first") is True
    OutboxMessage.objects.filter(pk=message.pk).update(state=State.SENT, done_at=None, claimed_until=None)
    assert _deliver(send_order_email, message, "second") is True
    assert _deliver(send_order_email, OutboxMessage.objects.get(pk=other), "third") is True

    first, second, paid = (m.extra_headers.get("Message-ID") or m.message()["Message-ID"] for m in mail.outbox)
    assert first == second
    assert f"outbox.{message.pk}." in first
    assert paid != first


def test_the_smtp_backend_has_a_timeout(settings):
    assert settings.EMAIL_TIMEOUT and settings.EMAIL_TIMEOUT <= 30
    assert get_connection("django.core.mail.backends.smtp.EmailBackend").timeout == settings.EMAIL_TIMEOUT


# --- leases derived from each task's time limit ------------------------------------------------------------


def _lease_of(message_id: int) -> float:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM next_attempt_at - sent_at) FROM project_outboxmessage WHERE id = %s",
            [message_id],
        )
        return float(cursor.fetchone()[0])


def _age(message_ids: list[int], seconds: int) -> None:
    """Move the rows' times `seconds` into the past, as if that long had passed since publishing."""
    with connection.cursor() as cursor:
        cursor.execute(
            """UPDATE project_outboxmessage
                  SET sent_at = sent_at - make_interval(secs => %s),
                      next_attempt_at = next_attempt_at - make_interval(secs => %s)
                WHERE id = ANY(%s)""",
            [seconds, seconds, message_ids],
        )


def test_each_task_kind_gets_a_lease_from_its_own_time_limit(settings):
    with transaction.atomic():
        import_id = outbox_enqueue(task=IMPORT_TASK, args=[10**9])
        email_id = outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": 10**9, "kind": "placed"})
    import_limit = app.tasks[IMPORT_TASK].time_limit

    assert OutboxRelay().relay_batch() == 2
    assert import_limit > 900
    assert _lease_of(import_id) > import_limit
    assert _lease_of(email_id) == settings.CELERY_TASK_TIME_LIMIT + settings.OUTBOX_LEASE_MARGIN_SECONDS
    app.control.purge()

    _age([import_id, email_id], 901)  # the import may still be running; the email is overdue
    assert OutboxRelay().relay_batch() == 1
    attempts = dict(OutboxMessage.objects.values_list("id", "attempts"))
    assert attempts == {import_id: 1, email_id: 2}  # only the email was published again

    _age([import_id], import_limit - 901 + settings.OUTBOX_LEASE_MARGIN_SECONDS)  # past its own lease
    assert OutboxRelay().relay_batch() == 1
    assert OutboxMessage.objects.get(pk=import_id).attempts == 2


def test_a_running_task_claims_its_own_lease_from_when_it_starts(settings):
    with transaction.atomic():
        message_id = outbox_enqueue(task=IMPORT_TASK, args=[10**9])
    task = app.tasks[IMPORT_TASK]
    assert isinstance(task, OutboxTask)

    outbox_claim(message_id=message_id, delivery_id="run", lease_seconds=task_lease_seconds(task))

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM claimed_until - now()) FROM project_outboxmessage WHERE id = %s", [message_id]
        )
        left = float(cursor.fetchone()[0])
    assert left > task.time_limit > 900
