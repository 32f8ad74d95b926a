"""The inventory admin's one use of a private Django API (inventory/admin/transactions.py): these
tests fail when the Django behaviour it relies on changes.

ServiceTransactionMixin calls ModelAdmin._changeform_view to skip the transaction that
ModelAdmin.changeform_view opens around a POST, so that the service a form calls is the outermost
transaction of the request and keeps its bounded retries.
"""

import inspect
import textwrap

import pytest
from django.contrib.admin import ModelAdmin
from django.db import connection
from django.test import Client

from inventory.admin.products import ProductAdmin
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.admin.warehouses import WarehouseAdmin
from tests.factories import ProductFactory, WarehouseFactory
from users.models import User

# Django 5.2's ModelAdmin.changeform_view: a transaction around _changeform_view for a POST, and
# nothing else the mixin would have to do itself (csrf_protect is also applied by admin_view).
DJANGO_CHANGEFORM_VIEW = """
@csrf_protect_m
def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return self._changeform_view(request, object_id, form_url, extra_context)

    with transaction.atomic(using=router.db_for_write(self.model)):
        return self._changeform_view(request, object_id, form_url, extra_context)
"""


def test_django_changeform_view_still_only_wraps_the_private_view_in_a_transaction():
    """If this fails, read Django's new changeform_view: the mixin must do whatever else it now
    does, or use a public hook if one now lets a view run without that transaction."""
    source = textwrap.dedent(inspect.getsource(ModelAdmin.changeform_view)).strip()
    assert source == DJANGO_CHANGEFORM_VIEW.strip()
    parameters = list(inspect.signature(ModelAdmin._changeform_view).parameters)
    assert parameters == ["self", "request", "object_id", "form_url", "extra_context"]


def test_the_admins_whose_forms_call_services_use_the_mixin():
    assert issubclass(ProductAdmin, ServiceTransactionMixin)
    assert issubclass(WarehouseAdmin, ServiceTransactionMixin)


PRODUCT_EDIT = {
    "name": "Blue mug",
    "description": "",
    "price": "3.00",
    "active": "on",
    "low_stock_threshold": "5",
    "version": "1",
    "stock_levels-TOTAL_FORMS": "0",  # the (read-only) inline's management form
    "stock_levels-INITIAL_FORMS": "0",
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("table", "page", "data"),
    [
        ("inventory_product", "product", PRODUCT_EDIT),
        ("inventory_warehouse", "warehouse", {"name": "Main hall", "priority": "7"}),
    ],
)
def test_a_posted_admin_edit_runs_its_service_as_the_outermost_transaction(table, page, data):
    edited = ProductFactory(sku="MUG") if page == "product" else WarehouseFactory(code="MAIN")
    client = Client()
    client.force_login(
        User.objects.create_user(email="admin@example.com", password="x" * 20, is_staff=True, is_superuser=True)
    )
    depths = []

    def observe(execute, sql, params, many, context):
        if sql.startswith(f'UPDATE "{table}"'):
            depths.append(len(connection.atomic_blocks))  # 1: the service's own transaction
        return execute(sql, params, many, context)

    with connection.execute_wrapper(observe):
        response = client.post(f"/admin/inventory/{page}/{edited.pk}/change/", data)

    assert response.status_code == 302
    assert depths == [1]
