import pytest
from django.core import mail
from django.db import transaction

from inventory import services
from inventory.emails import SEND_LOW_STOCK_ALERT
from inventory.models import Product
from inventory.tasks import low_stock_alerts, send_low_stock_alert
from project.celery import app
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, WarehouseFactory
from tests.project.outbox.support import ProbingEmailBackend, RelayThread, running_worker
from tests.support import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def shelf(settings):
    settings.STAFF_ALERT_EMAILS = ["buyer@example.com"]
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG", low_stock_threshold=3)
    ProductFactory(sku="CUP", low_stock_threshold=3)
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=2)


def alerts_sent() -> int:
    """Run the hourly job, then deliver the alert it queued (as the outbox's worker would)."""
    alerted = low_stock_alerts()
    for message in OutboxMessage.objects.filter(task=SEND_LOW_STOCK_ALERT, state=OutboxMessage.State.PENDING):
        send_low_stock_alert(*message.args, **message.kwargs)
        OutboxMessage.objects.filter(pk=message.pk).update(state=OutboxMessage.State.DONE)
    return alerted


def test_one_alert_per_product_per_crossing(shelf):
    assert alerts_sent() == 1
    assert mail.outbox[-1].to == ["buyer@example.com"]
    assert "CUP" in mail.outbox[-1].body and "MUG" not in mail.outbox[-1].body

    # Still low an hour later: no second mail.
    assert alerts_sent() == 0
    assert len(mail.outbox) == 1

    # MUG crosses; CUP recovers and crosses again.
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-8)
    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=10)
    assert alerts_sent() == 1
    assert "MUG" in mail.outbox[-1].body
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-10)
    assert alerts_sent() == 1
    assert "CUP" in mail.outbox[-1].body


def test_reservations_count_towards_low_stock(shelf):
    with transaction.atomic():
        services.reserve_stock(lines=[(Product.objects.get(sku="MUG"), 8)], reference="ORD-1")

    alerts_sent()

    assert "MUG" in mail.outbox[-1].body


def test_no_recipients_means_no_mail_and_no_flag(shelf, settings):
    settings.STAFF_ALERT_EMAILS = []

    assert alerts_sent() == 0
    assert not OutboxMessage.objects.exists()
    settings.STAFF_ALERT_EMAILS = ["buyer@example.com"]
    assert alerts_sent() == 1


def test_the_job_queues_the_alert_in_its_own_transaction_and_sends_nothing_itself(shelf):
    assert low_stock_alerts() == 1

    assert mail.outbox == []
    (message,) = OutboxMessage.objects.filter(task=SEND_LOW_STOCK_ALERT)
    assert message.kwargs["recipients"] == ["buyer@example.com"]
    assert Product.objects.get(sku="CUP").low_stock_alerted


def test_a_bad_alert_message_is_refused_without_mail():
    assert send_low_stock_alert(recipients="buyer@example.com", lines=["x"]) == 0
    assert send_low_stock_alert(recipients=["buyer@example.com"], lines=[1]) == 0
    assert mail.outbox == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_low_stock_alert_is_mailed_outside_any_transaction_with_its_outbox_message_id(shelf, settings):
    settings.EMAIL_BACKEND = "tests.project.outbox.support.ProbingEmailBackend"
    ProbingEmailBackend.reset()
    try:
        with running_worker(), RelayThread() as relay:
            assert low_stock_alerts() == 1
            message = OutboxMessage.objects.get(task=SEND_LOW_STOCK_ALERT)
            wait_for(
                lambda: OutboxMessage.objects.get(pk=message.pk).state == OutboxMessage.State.DONE,
                timeout=20,
                what="the alert to be sent",
            )
        assert relay.error is None
        (probe,) = ProbingEmailBackend.probes
    finally:
        ProbingEmailBackend.reset()
        app.control.purge()

    assert probe["in_atomic_block"] is False
    assert probe["locks"] == []
    (sent,) = mail.outbox
    assert f"<outbox.{message.pk}." in sent.message()["Message-ID"]
    assert "CUP" in sent.body
