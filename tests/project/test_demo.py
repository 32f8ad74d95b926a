import pytest

from inventory.models import Product, StockMovement, Warehouse
from inventory.selectors import stock_ledger_breaches
from project.demo import load_demo_data
from users.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_demo_data_is_idempotent_and_breaks_no_invariant():
    list(load_demo_data())
    counts = (Product.objects.count(), Warehouse.objects.count(), StockMovement.objects.count(), User.objects.count())

    list(load_demo_data())

    assert counts[0] == 300
    assert (
        Product.objects.count(),
        Warehouse.objects.count(),
        StockMovement.objects.count(),
        User.objects.count(),
    ) == counts
    assert stock_ledger_breaches() == []
    assert User.objects.get(email="staff@example.com").is_staff
