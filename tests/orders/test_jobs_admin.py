"""The order jobs in the admin: reconciliation now with its report, release expired now,
sales reports to download, bulk fulfilment reports, and the actions for the order list."""

import uuid
from datetime import date, timedelta

import pytest
from django.contrib import admin as django_admin
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from inventory import services as stock
from orders import jobs, services
from orders.admin_jobs import bulk_fulfil_selected, release_expired_selected
from orders.api import render_order
from orders.models import BulkFulfilment, Order, ReconciliationRun
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from users.models import User


@pytest.fixture
def orders(db) -> list[Order]:
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=20)
    buyer = UserFactory()
    placed = []
    for _ in range(3):
        result = services.order_place(
            user=buyer,
            lines=[services.OrderLineRequest("MUG", 2)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=uuid.uuid4().hex,
        )
        placed.append(Order.objects.get(number=result.body["number"]))
    return placed


def _action_request(user):
    request = RequestFactory().post("/admin/orders/order/")
    request.user = user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)
    return request


@pytest.mark.django_db(transaction=True)
def test_run_reconciliation_now_shows_its_report(admin, admin_user):
    changelist = admin.get(reverse("admin:orders_reconciliationrun_changelist"))
    assert b"Run reconciliation now" in changelist.content
    assert b"Release expired reservations now" in changelist.content

    response = admin.post(reverse("admin:orders_reconciliationrun_run"), follow=True)

    run = ReconciliationRun.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:orders_reconciliationrun_change", args=[run.pk])
    assert b"No breach: every invariant holds." in response.content
    assert run.requested_by == admin_user
    assert admin.get(reverse("admin:orders_reconciliationrun_run")).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_reconciliation_report_page_lists_each_breach_with_its_row(admin):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG")
    level = stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    with connection.cursor() as cursor:
        # Invariant 1 is also a CHECK constraint; this breaks 2 (ledger) and 3 (no order holds them).
        cursor.execute("UPDATE inventory_stocklevel SET reserved = 3 WHERE id = %s", [level.pk])

    response = admin.post(reverse("admin:orders_reconciliationrun_run"), follow=True)

    text = response.content.decode()
    assert "ledger_sums" in text and "reserved_vs_allocations" in text
    assert f"id={level.pk}" in text


def test_release_expired_now_button(admin, orders):
    Order.objects.filter(pk=orders[0].pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    response = admin.post(reverse("admin:orders_reconciliationrun_release_expired"), follow=True)

    assert b"1 expired reservation(s) released." in response.content
    assert Order.objects.get(pk=orders[0].pk).status == Order.Status.EXPIRED


def test_release_expired_now_needs_the_order_change_permission(db, orders):
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user(email="viewer@example.com", password="x" * 20, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_reconciliationrun"))
    client = Client()
    client.force_login(viewer)
    Order.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    assert client.post(reverse("admin:orders_reconciliationrun_release_expired")).status_code == 403
    assert not Order.objects.filter(status=Order.Status.EXPIRED).exists()


def test_sales_report_list_and_csv_download(admin, orders):
    services.order_pay(order_id=orders[0].pk)
    report = jobs.sales_report_generate(day=timezone.localdate())

    listing = admin.get(reverse("admin:orders_salesreport_changelist"))
    download = admin.get(reverse("admin:orders_salesreport_download", args=[report.pk]))

    assert f"sales-{report.day}.csv".encode() in listing.content
    assert download.status_code == 200
    assert download["Content-Type"].startswith("text/csv")
    assert download["Content-Disposition"] == f'attachment; filename="sales-{report.day}.csv"'
    assert download.content.decode().splitlines()[1].startswith("MUG,")
    assert admin.get(reverse("admin:orders_salesreport_download", args=[report.pk + 99])).status_code == 404
    assert date.fromisoformat(str(report.day))


def test_bulk_fulfil_action_queues_a_job_and_opens_its_report(admin, admin_user, orders):
    services.order_pay(order_id=orders[0].pk)
    modeladmin = django_admin.ModelAdmin(Order, django_admin.site)

    response = bulk_fulfil_selected(modeladmin, _action_request(admin_user), Order.objects.all())

    run = BulkFulfilment.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:orders_bulkfulfilment_change", args=[run.pk])
    assert run.order_ids == sorted(o.pk for o in orders)
    assert run.requested_by == admin_user
    message = OutboxMessage.objects.get(task="orders.bulk_fulfil")
    assert message.kwargs == {"order_ids": run.order_ids, "run_id": run.pk}
    page = admin.get(response.url)
    assert page.status_code == 200
    assert b"queued" in page.content.lower()
    assert admin.get(reverse("admin:orders_bulkfulfilment_changelist"), {"state__exact": "queued"}).status_code == 200


def test_release_expired_action_releases_only_selected_overdue_orders(admin_user, orders):
    Order.objects.filter(pk__in=[orders[0].pk, orders[1].pk]).update(expires_at=timezone.now() - timedelta(minutes=1))
    modeladmin = django_admin.ModelAdmin(Order, django_admin.site)

    release_expired_selected(
        modeladmin, _action_request(admin_user), Order.objects.filter(pk__in=[orders[0].pk, orders[2].pk])
    )

    statuses = [Order.objects.get(pk=o.pk).status for o in orders]
    assert statuses == [Order.Status.EXPIRED, Order.Status.RESERVED, Order.Status.RESERVED]


def test_the_job_actions_plug_into_the_orders_admin(admin_user):
    from django.contrib.admin import AdminSite

    from orders.admin import OrderAdmin

    modeladmin = OrderAdmin(Order, AdminSite())

    assert modeladmin.check() == []
    available = modeladmin.get_actions(_action_request(admin_user))
    assert {"bulk_fulfil_selected", "release_expired_selected"} <= set(available)


def test_the_job_actions_refuse_staff_who_may_not_move_orders(db, orders):
    viewer = User.objects.create_user(email="viewer@example.com", password="x" * 20, is_staff=True)
    Order.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    modeladmin = django_admin.ModelAdmin(Order, django_admin.site)

    release_expired_selected(modeladmin, _action_request(viewer), Order.objects.all())
    bulk_fulfil_selected(modeladmin, _action_request(viewer), Order.objects.all())

    assert not Order.objects.filter(status=Order.Status.EXPIRED).exists()
    assert not BulkFulfilment.objects.exists()


def test_the_order_list_offers_the_job_actions(admin_client):
    response = admin_client.get("/admin/orders/order/")

    assert response.status_code == 200
    assert b"bulk_fulfil_selected" in response.content
    assert b"release_expired_selected" in response.content
