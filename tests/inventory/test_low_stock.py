import pytest
from django.core import mail
from django.db import transaction

from inventory import services
from inventory.emails import SEND_LOW_STOCK_ALERT
from inventory.models import Product, PurchaseOrder, StockLevel
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


# --- incoming stock and reorder points ----------------------------------------------------------


def test_an_open_purchase_order_that_lifts_the_product_above_its_threshold_holds_the_alert_back(shelf):
    po = services.purchase_order_create(warehouse_code="MAIN", lines=[("CUP", 2)])  # 2 available + 2 incoming > 3

    assert alerts_sent() == 0
    assert not Product.objects.get(sku="CUP").low_stock_alerted

    services.purchase_order_cancel(purchase_order_id=po.pk)
    assert alerts_sent() == 1
    assert "CUP" in mail.outbox[-1].body


def test_incoming_that_does_not_cover_the_threshold_is_shown_on_the_alert_line(shelf):
    services.purchase_order_create(warehouse_code="MAIN", lines=[("CUP", 1)])  # 2 + 1 <= 3
    with transaction.atomic():
        services.reserve_stock(lines=[(Product.objects.get(sku="CUP"), 1)], reference="ORD-1")

    assert alerts_sent() == 1

    (line,) = mail.outbox[-1].body.splitlines()[2:]
    assert line.startswith("CUP")
    assert "2 on hand, 1 available, 1 incoming (threshold 3)" in line
    assert "reorder point" not in line


def test_drafts_and_inactive_warehouses_are_not_incoming(shelf):
    WarehouseFactory(code="SHUT", active=False)
    services.purchase_order_create(warehouse_code="SHUT", lines=[("CUP", 50)])
    draft = services.purchase_order_create(warehouse_code="MAIN", lines=[("CUP", 50)])
    PurchaseOrder.objects.filter(pk=draft.pk).update(status=PurchaseOrder.Status.DRAFT)

    assert alerts_sent() == 1
    assert "2 on hand, 2 available, 0 incoming" in mail.outbox[-1].body


def test_the_alert_says_where_a_level_below_its_reorder_point_gets_a_draft(shelf):
    WarehouseFactory(code="EAST")
    services.stock_receive(sku="CUP", warehouse_code="EAST", quantity=1)
    StockLevel.objects.filter(product__sku="CUP").update(reorder_point=2, reorder_quantity=10)  # MAIN at it, EAST below
    StockLevel.objects.filter(product__sku="MUG").update(reorder_point=5)
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-7)  # 3: low, and below its point

    alerts_sent()

    cup, mug = mail.outbox[-1].body.splitlines()[2:]
    assert cup.startswith("CUP") and "3 on hand, 3 available, 0 incoming (threshold 3)" in cup
    assert cup.endswith("; below the reorder point in EAST: a draft purchase order will be proposed")
    assert mug.startswith("MUG")
    assert mug.endswith("; below the reorder point in MAIN: a draft purchase order will be proposed")


def test_a_product_covered_by_a_purchase_order_after_its_alert_is_alerted_again_if_the_order_is_cancelled(shelf):
    assert alerts_sent() == 1  # CUP
    po = services.purchase_order_create(warehouse_code="MAIN", lines=[("CUP", 10)])
    assert alerts_sent() == 0
    assert not Product.objects.get(sku="CUP").low_stock_alerted  # covered: the crossing is over

    services.purchase_order_cancel(purchase_order_id=po.pk)

    assert alerts_sent() == 1
    assert "CUP" in mail.outbox[-1].body
