"""Order emails travel in groups: the relay publishes up to the task's `outbox_batch_size` of
them as one Celery message, and one delivery claims them in one statement, sends them over one
connection and records each as done, or as failed from the one that failed on. The guarantees of
a single message hold per message: one email per message unless a crash falls between sending
and recording, the same Message-ID at every delivery, nothing lost when the broker goes away in
the middle of a round.
"""

import smtplib
import uuid

import pytest
from django.core import mail
from django.core.mail.backends import locmem
from django.db import connection, transaction

from inventory import services as stock
from orders import services
from orders.api import render_order
from orders.emails import SEND_ORDER_EMAIL
from orders.models import Order
from orders.tasks import send_order_email
from project.celery import app
from project.outbox.models import OutboxMessage
from project.outbox.relay import BrokerUnavailable, OutboxRelay
from project.outbox.services import OUTBOX_BATCH_HEADER, outbox_claim_many, outbox_enqueue, outbox_message_id
from tests.bench.whole_shop import SmtpSink
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import RelayThread, TcpProxy, broker_host_port, broker_url_via, running_worker
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

State = OutboxMessage.State
FAILING = "tests.project.outbox.test_batches.FailingForOneRecipient"


class FailingForOneRecipient(locmem.EmailBackend):
    """The test backend (django.core.mail.outbox), refusing every email to `refused`."""

    refused = "refused@example.com"

    def send_messages(self, messages):
        for message in messages:
            if self.refused in message.to:
                raise smtplib.SMTPRecipientsRefused({self.refused: (550, b"no such user")})
        return super().send_messages(messages)


@pytest.fixture(autouse=True)
def _clean():
    mail.outbox = []
    yield
    app.control.purge()


def _orders(*emails: str) -> list[int]:
    """One placed order per customer email, each with its "placed" email in the outbox."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Mug")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=len(emails))
    ids = []
    for email in emails:
        result = services.order_place(
            user=UserFactory(email=email),
            lines=[services.OrderLineRequest("MUG", 1)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=uuid.uuid4().hex,
            fingerprint="mug",
        )
        ids.append(Order.objects.get(number=result.body["number"]).pk)
    return ids


def _email_messages() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(task=SEND_ORDER_EMAIL).order_by("pk"))


def _deliver_batch(message_ids: list[int], delivery_id: str):
    """One delivery of a group as a worker runs it: the relay's header, no arguments."""
    send_order_email.push_request(id=delivery_id, **{OUTBOX_BATCH_HEADER: message_ids})
    try:
        return send_order_email()
    finally:
        send_order_email.pop_request()
        connection.close()


def test_the_relay_groups_a_batch_tasks_messages_and_publishes_the_others_one_by_one(monkeypatch):
    monkeypatch.setattr(send_order_email, "outbox_batch_size", 2)
    with transaction.atomic():
        for order_id in (1, 2, 3):
            outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": order_id, "kind": "placed"})
        outbox_enqueue(task="inventory.import_stock", args=[10**9])
    relay = OutboxRelay()
    messages = list(OutboxMessage.objects.order_by("pk"))

    groups = relay._deliveries(messages)

    assert [[m.task for m in group] for group in groups] == [
        [SEND_ORDER_EMAIL, SEND_ORDER_EMAIL],
        [SEND_ORDER_EMAIL],
        ["inventory.import_stock"],
    ]
    assert relay.relay_batch() == 4
    assert set(OutboxMessage.objects.values_list("state", flat=True)) == {State.SENT}


def test_a_group_is_sent_over_one_delivery_each_email_with_its_own_message_id():
    _orders("ada@example.com", "bob@example.com", "cy@example.com")
    messages = _email_messages()

    with running_worker(), RelayThread():
        wait_for(
            lambda: set(OutboxMessage.objects.values_list("state", flat=True)) == {State.DONE},
            timeout=20,
            what="the emails to be sent",
        )

    assert sorted(m.to[0] for m in mail.outbox) == ["ada@example.com", "bob@example.com", "cy@example.com"]
    ids = {m.extra_headers["Message-ID"] for m in mail.outbox}
    assert ids == {f"<outbox.{m.pk}.{int(m.created_at.timestamp() * 1_000_000)}@localhost>" for m in messages}
    assert all(m.attempts == 1 for m in _email_messages())


def test_a_failure_in_a_group_keeps_the_emails_before_it_and_retries_it_and_the_rest(settings):
    settings.EMAIL_BACKEND = FAILING
    _orders("ada@example.com", FailingForOneRecipient.refused, "cy@example.com")
    first, refused, last = _email_messages()

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _deliver_batch([first.pk, refused.pk, last.pk], "delivery-1")

    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    states = {m.pk: m for m in _email_messages()}
    assert states[first.pk].state == State.DONE
    for message_id in (refused.pk, last.pk):
        retried = states[message_id]
        assert retried.state == State.PENDING  # published again after a backoff
        assert "SMTPRecipientsRefused" in retried.last_error
        assert retried.claimed_by == ""

    # The next delivery of the group skips the done email and sends the others.
    FailingForOneRecipient.refused = "nobody@example.com"
    try:
        assert _deliver_batch([first.pk, refused.pk, last.pk], "delivery-2") == 2
    finally:
        FailingForOneRecipient.refused = "refused@example.com"
    assert [m.to for m in mail.outbox] == [["ada@example.com"], ["refused@example.com"], ["cy@example.com"]]
    assert {m.state for m in _email_messages()} == {State.DONE}


def test_over_smtp_a_group_records_an_email_done_only_once_the_server_accepted_it(settings):
    settings.EMAIL_BACKEND = "project.mail.smtp.EmailBackend"
    _orders("ada@example.com", "gone@example.com", "cy@example.com")
    first, refused, last = _email_messages()

    with SmtpSink(refuse=frozenset({"gone@example.com"})) as sink:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            _deliver_batch([first.pk, refused.pk, last.pk], "delivery-1")
        assert list(sink.message_ids) == [outbox_message_id(first)]  # cy's email never went out
        states = {m.pk: m.state for m in _email_messages()}
        assert states == {first.pk: State.DONE, refused.pk: State.PENDING, last.pk: State.PENDING}

        sink.refuse = frozenset()
        assert _deliver_batch([first.pk, refused.pk, last.pk], "delivery-2") == 2

    assert sink.message_ids == {outbox_message_id(m): 1 for m in (first, refused, last)}
    assert {m.state for m in _email_messages()} == {State.DONE}


def test_two_deliveries_of_overlapping_groups_claim_each_message_once():
    with transaction.atomic():
        ids = [outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": n, "kind": "placed"}) for n in range(1, 6)]

    first = outbox_claim_many(message_ids=ids[:3], delivery_id="a", lease_seconds=600)
    second = outbox_claim_many(message_ids=list(reversed(ids)), delivery_id="b", lease_seconds=600)
    again = outbox_claim_many(message_ids=ids[:3], delivery_id="a", lease_seconds=600)

    assert [m.pk for m in first] == ids[:3]
    assert [m.pk for m in second] == ids[3:]  # in id order, without those a live claim holds
    assert [m.pk for m in again] == ids[:3]  # the same delivery again takes its own claims over
    assert first[0].kwargs == {"order_id": 1, "kind": "placed"}


@pytest.mark.parametrize("header", ["7", [], ["7"], [1.5], list(range(1, 1002))])
def test_a_group_header_that_is_not_a_short_list_of_ids_is_refused_and_changes_nothing(header):
    with transaction.atomic():
        message_id = outbox_enqueue(task=SEND_ORDER_EMAIL, kwargs={"order_id": 1, "kind": "placed"})

    assert _deliver_batch(header, "bad") is None

    assert OutboxMessage.objects.get(pk=message_id).claimed_by == ""
    assert mail.outbox == []


class CutAfterFirstPublish(OutboxRelay):
    """Publishes one Celery message, then the broker goes away (the test's proxy is cut)."""

    def __init__(self, proxy: TcpProxy, **options):
        super().__init__(**options)
        self.proxy = proxy
        self.published = 0

    def _publish(self, delivery):
        if self.published == 1:
            self.proxy.cut()
        super()._publish(delivery)
        self.published += 1


def test_a_round_published_partly_before_the_broker_went_away_delivers_everything_once(monkeypatch):
    monkeypatch.setattr(send_order_email, "outbox_batch_size", 2)
    _orders("ada@example.com", "bob@example.com", "cy@example.com", "di@example.com")
    proxy = TcpProxy(*broker_host_port()).start()
    try:
        relay = CutAfterFirstPublish(proxy, broker_url=broker_url_via(proxy))
        with pytest.raises(BrokerUnavailable):
            relay.relay_batch()
        # The first group went out and is sent; the second stays pending for the next round.
        states = [m.state for m in _email_messages()]
        assert states == [State.SENT, State.SENT, State.PENDING, State.PENDING]
        relay._drop_broker()

        proxy.restore()
        with running_worker(), RelayThread(broker_url=broker_url_via(proxy)) as thread:
            wait_for(
                lambda: {m.state for m in _email_messages()} == {State.DONE},
                timeout=30,
                what="every email after the broker is back",
            )
        assert thread.error is None
    finally:
        proxy.close()

    assert sorted(m.to[0] for m in mail.outbox) == [
        "ada@example.com", "bob@example.com", "cy@example.com", "di@example.com"
    ]  # fmt: skip
    assert len({m.extra_headers["Message-ID"] for m in mail.outbox}) == 4
    assert [m.attempts for m in _email_messages()] == [1, 1, 1, 1]  # a broker failure is no delivery
