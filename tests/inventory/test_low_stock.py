import pytest
from django.core import mail
from django.db import transaction

from inventory import services
from inventory.tasks import low_stock_alerts
from tests.factories import ProductFactory, WarehouseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def shelf(settings):
    settings.STAFF_ALERT_EMAILS = ["buyer@example.com"]
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG", low_stock_threshold=3)
    ProductFactory(sku="CUP", low_stock_threshold=3)
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=2)


def test_one_alert_per_product_per_crossing(shelf):
    assert low_stock_alerts() == 1
    assert mail.outbox[-1].to == ["buyer@example.com"]
    assert "CUP" in mail.outbox[-1].body and "MUG" not in mail.outbox[-1].body

    # Still low an hour later: no second mail.
    assert low_stock_alerts() == 0
    assert len(mail.outbox) == 1

    # MUG crosses; CUP recovers and crosses again.
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-8)
    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=10)
    assert low_stock_alerts() == 1
    assert "MUG" in mail.outbox[-1].body
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-10)
    assert low_stock_alerts() == 1
    assert "CUP" in mail.outbox[-1].body


def test_reservations_count_towards_low_stock(shelf):
    from inventory.models import Product

    with transaction.atomic():
        services.reserve_stock(lines=[(Product.objects.get(sku="MUG"), 8)], reference="ORD-1")

    low_stock_alerts()

    assert "MUG" in mail.outbox[-1].body


def test_no_recipients_means_no_mail_and_no_flag(shelf, settings):
    settings.STAFF_ALERT_EMAILS = []

    assert low_stock_alerts() == 0
    settings.STAFF_ALERT_EMAILS = ["buyer@example.com"]
    assert low_stock_alerts() == 1
