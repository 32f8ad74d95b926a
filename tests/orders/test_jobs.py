"""The order jobs against real PostgreSQL: expiry sweeps, bulk fulfilment, reports, reconciliation.

Concurrency is real (threads on a barrier, a second connection holding row locks); jobs that
run as Celery tasks are also run on a real worker fed by the real relay.
"""

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from inventory import services as stock
from inventory.models import StockLevel, StockMovement
from orders import jobs, services, tasks
from orders.api import render_order
from orders.emails import KINDS, order_emails_sender
from orders.models import (
    Allocation,
    BulkFulfilment,
    IdempotencyKey,
    Order,
    OrderLine,
    ReconciliationRun,
    SalesReport,
)
from project.db.transactions import advisory_key
from project.errors import InvalidInput
from project.observability.logs import request_id_var
from project.outbox.models import OutboxMessage
from project.outbox.tasks import prune_outbox
from tests.concurrency.support import run_concurrently
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import LogCapture, RelayThread, running_worker
from tests.support import other_connection, wait_for

Status = Order.Status


def _stock(skus=("MUG", "TEA", "JAR"), units=400):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    for sku in skus:
        ProductFactory(sku=sku)
        # Two warehouses, so a line of more than half the units splits across two levels.
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=units // 2)
        stock.stock_receive(sku=sku, warehouse_code="EAST", quantity=units // 2)


def _place(user, *lines) -> Order:
    result = services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=str(lines),
    )
    return Order.objects.get(number=result.body["number"])  # the one-round-trip path returns the body only


def _overdue(orders) -> None:
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(expires_at=timezone.now() - timedelta(minutes=1))


def _reserved_total() -> int:
    return sum(StockLevel.objects.values_list("reserved", flat=True))


def _lock_in_other_transaction(order_ids):
    """A second connection holding row locks on these orders until closed."""
    other = other_connection()
    other.execute("SELECT id FROM orders_order WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [list(order_ids)])
    return other


# --- expiry ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_sweepers_at_once_release_each_order_once():
    _stock()
    buyers = UserFactory.create_batch(4)
    orders = [_place(buyers[n % 4], ("MUG", 1 + n % 3), ("TEA", 2)) for n in range(90)]
    orders += [_place(buyers[n % 4], ("JAR", 150)) for n in range(2)]  # split across MAIN and EAST
    _overdue(orders)
    assert _reserved_total() > 0

    results = run_concurrently(lambda i: jobs.expire_reservations(chunk_size=4), 2)

    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == len(orders)
    assert min(results) > 0, f"one sweeper did all the work, no overlap: {results}"
    assert set(Order.objects.values_list("status", flat=True)) == {Status.EXPIRED}
    assert _reserved_total() == 0
    # Each order's own ledger rows give back exactly what it held.
    expiry_rows = StockMovement.objects.filter(reason="expiry")
    assert expiry_rows.filter(delta_on_hand=0).count() == expiry_rows.count()
    released = defaultdict(int)
    for reference, level_id, delta in expiry_rows.values_list("reference", "level_id", "delta_reserved"):
        released[(reference, level_id)] -= delta
    held = defaultdict(int)
    for number, level_id, quantity in Allocation.objects.values_list(
        "line__order__number", "stock_level_id", "quantity"
    ):
        held[(number, level_id)] += quantity
    assert released == held
    emails = OutboxMessage.objects.filter(task="orders.send_order_email", kwargs__kind="expired")
    assert sorted(m.kwargs["order_id"] for m in emails) == sorted(o.pk for o in orders)
    assert_stock_invariants()


def test_expiry_leaves_orders_still_in_time_and_paid_orders_alone(db):
    _stock()
    buyer = UserFactory()
    overdue, in_time, paid = _place(buyer, ("MUG", 2)), _place(buyer, ("MUG", 3)), _place(buyer, ("TEA", 1))
    services.order_pay(order_id=paid.pk)
    _overdue([overdue, paid])

    assert jobs.expire_reservations() == 1

    statuses = dict(Order.objects.values_list("pk", "status"))
    assert statuses == {overdue.pk: Status.EXPIRED, in_time.pk: Status.RESERVED, paid.pk: Status.PAID}
    assert Order.objects.get(pk=overdue.pk).version == 2
    assert_stock_invariants()


def test_expiry_limited_to_selected_orders(db):
    _stock()
    buyer = UserFactory()
    first, second = _place(buyer, ("MUG", 1)), _place(buyer, ("MUG", 1))
    _overdue([first, second])

    assert jobs.expire_reservations(order_ids=[second.pk]) == 1

    assert Order.objects.get(pk=first.pk).status == Status.RESERVED
    assert Order.objects.get(pk=second.pk).status == Status.EXPIRED


@pytest.mark.django_db(transaction=True)
def test_expiry_chunks_follow_the_deadline_then_the_id_and_release_everything(api_client):
    _stock(skus=("MUG",))
    buyer = UserFactory()
    orders = [_place(buyer, ("MUG", 1)) for _ in range(7)]
    deadline = timezone.now() - timedelta(minutes=5)
    # Five share a deadline; the two placed last are due earlier, so neither id nor deadline
    # alone gives the order the chunks must follow.
    Order.objects.filter(pk__in=[o.pk for o in orders[:5]]).update(expires_at=deadline)
    Order.objects.filter(pk__in=[o.pk for o in orders[5:]]).update(expires_at=deadline - timedelta(minutes=1))
    assert api_client.get("/api/v1/products/MUG").json()["available"] == 393  # now cached
    changes = REGISTRY.get_sample_value("stockroom_stock_changes_total", {"reason": "expiry"}) or 0
    token = request_id_var.set("req-expiry-1")
    try:
        with CaptureQueriesContext(connection) as queries:
            assert jobs.expire_reservations(chunk_size=3) == 7
    finally:
        request_id_var.reset(token)

    assert sum("orders_expire_chunk" in q["sql"] for q in queries.captured_queries) == 3  # 3 (both deadlines) + 3 + 1
    assert set(Order.objects.values_list("status", flat=True)) == {Status.EXPIRED}
    assert _reserved_total() == 0
    assert api_client.get("/api/v1/products/MUG").json()["available"] == 400  # invalidated at commit
    rows = StockMovement.objects.filter(reason="expiry")
    assert sorted(rows.values_list("reference", "delta_reserved")) == sorted((o.number, -1) for o in orders)
    emails = OutboxMessage.objects.filter(task="orders.send_order_email", kwargs__kind="expired")
    assert sorted(emails.values_list("kwargs__order_id", "request_id")) == [(o.pk, "req-expiry-1") for o in orders]
    assert REGISTRY.get_sample_value("stockroom_stock_changes_total", {"reason": "expiry"}) == changes + 7
    assert_stock_invariants()


@pytest.mark.django_db(transaction=True)
def test_expiry_leaves_orders_another_transaction_holds_for_the_next_sweep():
    _stock(skus=("MUG",))
    buyer = UserFactory()
    orders = [_place(buyer, ("MUG", 2)) for _ in range(5)]
    _overdue(orders)
    held = {orders[1].pk, orders[3].pk}
    other = _lock_in_other_transaction(held)
    try:
        assert jobs.expire_reservations(chunk_size=2) == 3  # never waits for the held rows
        reserved = set(Order.objects.filter(status=Status.RESERVED).values_list("pk", flat=True))
        assert reserved == held
        assert _reserved_total() == 4
    finally:
        other.close()

    assert jobs.expire_reservations(chunk_size=2) == 2
    assert _reserved_total() == 0
    assert_stock_invariants()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_expire_reservations_task_runs_on_a_real_worker():
    _stock()
    order = _place(UserFactory(), ("MUG", 2))
    _overdue([order])

    with running_worker():
        tasks.expire_reservations.delay()
        wait_for(lambda: Order.objects.get(pk=order.pk).status == Status.EXPIRED, timeout=20, what="the sweep")

    assert _reserved_total() == 0
    assert_stock_invariants()


# --- bulk fulfilment -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_bulk_fulfil_reports_orders_locked_by_another_transaction(settings):
    settings.BULK_FULFIL_CHUNK_SIZE = 3
    _stock()
    buyer = UserFactory()
    paid = [_place(buyer, ("MUG", 2), ("TEA", 1)) for _ in range(7)]
    for order in paid:
        services.order_pay(order_id=order.pk)
    unpaid = _place(buyer, ("MUG", 1))
    held = [paid[1].pk, paid[4].pk]
    missing = max(o.pk for o in [*paid, unpaid]) + 1000
    on_hand_before = sum(StockLevel.objects.values_list("on_hand", flat=True))

    other = _lock_in_other_transaction(held)
    try:
        with running_worker(), RelayThread():
            run = jobs.bulk_fulfilment_request(order_ids=[o.pk for o in paid] + [unpaid.pk, missing])
            wait_for(
                lambda: BulkFulfilment.objects.get(pk=run.pk).state == BulkFulfilment.State.DONE,
                timeout=30,
                what="the bulk fulfilment job",
            )
    finally:
        other.close()

    run.refresh_from_db()
    assert sorted(run.locked) == sorted(held)
    assert sorted(run.fulfilled) == sorted(o.pk for o in paid if o.pk not in held)
    assert run.not_paid == [unpaid.pk]
    assert run.missing == [missing]
    statuses = dict(Order.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in held] == [Status.PAID, Status.PAID]
    assert all(statuses[pk] == Status.FULFILLED for pk in run.fulfilled)
    assert sum(StockLevel.objects.values_list("on_hand", flat=True)) == on_hand_before - 5 * 3
    message = OutboxMessage.objects.get(task="orders.bulk_fulfil")
    assert message.state == OutboxMessage.State.DONE
    assert_stock_invariants()


def test_bulk_fulfil_run_again_changes_nothing(db):
    _stock()
    order = _place(UserFactory(), ("MUG", 1))
    services.order_pay(order_id=order.pk)
    run = jobs.bulk_fulfil(order_ids=[order.pk])

    again = jobs.bulk_fulfil(order_ids=[order.pk], run_id=run.pk)

    assert (again.pk, again.fulfilled, again.not_paid) == (run.pk, [order.pk], [])
    assert StockMovement.objects.filter(reference__startswith=f"{order.number}/S", reason="fulfilment").count() == 1


@pytest.mark.parametrize(
    ("call", "refusal"),
    [
        (lambda: tasks.bulk_fulfil("all"), "bulk_fulfil refused"),
        (lambda: tasks.bulk_fulfil([1, "two", -3]), "bulk_fulfil refused"),
        (lambda: tasks.bulk_fulfil([], run_id=None), "bulk_fulfil refused"),
        (lambda: tasks.bulk_fulfil([1], run_id="x"), "bulk_fulfil refused"),
        (lambda: tasks.send_order_email("1", "placed"), "send_order_email refused"),
        (lambda: tasks.send_order_email(1, "shouting"), "send_order_email refused"),
        (lambda: tasks.daily_sales_report("yesterday-ish"), "daily_sales_report refused"),
        (lambda: prune_outbox("a while"), "prune_outbox refused"),
        (lambda: prune_outbox(0), "prune_outbox refused"),
    ],
)
def test_tasks_refuse_bad_arguments_without_crashing(db, call, refusal):
    with LogCapture() as logs:
        call()
    assert any(refusal in message for message in logs.messages())
    assert not BulkFulfilment.objects.exists()
    assert mail.outbox == []


# --- daily sales report ------------------------------------------------------------------------------------


def test_daily_sales_report_takes_the_day_in_the_shop_time_zone(db, settings):
    settings.TIME_ZONE = "America/New_York"
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Mug", price="10.00")
    ProductFactory(sku="EVIL", name="=HYPERLINK(1)", price="2.50")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=50)
    stock.stock_receive(sku="EVIL", warehouse_code="MAIN", quantity=50)
    buyer = UserFactory()
    late_evening = _place(buyer, ("MUG", 1))  # 23:30 on the 9th in New York (EDT, UTC-4)
    morning = _place(buyer, ("MUG", 2), ("EVIL", 4))  # 08:00 on the 10th
    cancelled = _place(buyer, ("MUG", 5))  # paid on the 10th, then cancelled: refunded
    for order in (late_evening, morning, cancelled):
        services.order_pay(order_id=order.pk)
    services.order_cancel(order_id=cancelled.pk)
    Order.objects.filter(pk=late_evening.pk).update(paid_at=datetime(2026, 3, 10, 3, 30, tzinfo=UTC))
    Order.objects.filter(pk__in=[morning.pk, cancelled.pk]).update(paid_at=datetime(2026, 3, 10, 12, 0, tzinfo=UTC))

    report = jobs.sales_report_generate(day=date(2026, 3, 10))

    assert (report.orders, report.units, str(report.revenue), report.time_zone) == (1, 6, "30.00", "America/New_York")
    assert report.csv.splitlines() == [
        "sku,name,orders,units,revenue",
        "EVIL,'=HYPERLINK(1),1,4,10.00",
        "MUG,Mug,1,2,20.00",
        "TOTAL,,1,6,30.00",
    ]
    previous = jobs.sales_report_generate(day=date(2026, 3, 9))
    assert (previous.orders, previous.units) == (1, 1)
    jobs.sales_report_generate(day=date(2026, 3, 10))  # again: the day's row is replaced, not added
    assert SalesReport.objects.filter(day=date(2026, 3, 10)).count() == 1


def test_daily_sales_report_task_defaults_to_yesterday(db):
    report_id = tasks.daily_sales_report()

    report = SalesReport.objects.get(pk=report_id)
    assert report.day == jobs.yesterday()
    assert report.orders == 0


# --- pruning ------------------------------------------------------------------------------------------------


def test_prune_idempotency_keys_deletes_only_keys_older_than_the_setting(db, settings):
    settings.IDEMPOTENCY_KEEP_HOURS = 24
    _stock()
    buyer = UserFactory()
    old, fresh = _place(buyer, ("MUG", 1)), _place(buyer, ("MUG", 1))
    IdempotencyKey.objects.filter(order=old).update(created_at=timezone.now() - timedelta(hours=25))

    assert tasks.prune_idempotency_keys() == 1

    assert list(IdempotencyKey.objects.values_list("order_id", flat=True)) == [fresh.pk]
    assert Order.objects.count() == 2  # the orders stay


# --- reconciliation -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reconciliation_finds_exactly_a_breach_made_with_raw_sql():
    _stock()
    buyer = UserFactory()
    order = _place(buyer, ("MUG", 3), ("TEA", 1))
    services.order_pay(order_id=order.pk)
    _place(buyer, ("JAR", 1))
    assert jobs.reconcile_stock().outcome == ReconciliationRun.Outcome.CLEAN
    level = StockLevel.objects.filter(product__sku="TEA", warehouse__code="EAST").get()

    with connection.cursor() as cursor:
        cursor.execute("UPDATE inventory_stocklevel SET on_hand = on_hand + 1 WHERE id = %s", [level.pk])
    run = jobs.reconcile_stock()

    assert run.outcome == ReconciliationRun.Outcome.BREACHES
    assert run.breach_count == 1
    [breach] = run.breaches
    assert (breach["invariant"], breach["check"]) == (2, "ledger_sums")
    assert breach["row"]["id"] == level.pk
    assert breach["row"]["on_hand"] == breach["row"]["ledger_on_hand"] + 1
    assert run.levels_checked == StockLevel.objects.count()


@pytest.mark.django_db(transaction=True)
def test_reconciliation_records_allocation_breaches_with_their_rows():
    _stock()
    order = _place(UserFactory(), ("MUG", 2))
    level = Allocation.objects.get(line__order_id=order.pk).stock_level
    with connection.cursor() as cursor:
        # The level keeps its reservation but the order no longer holds it: invariant 3 only.
        cursor.execute("UPDATE orders_order SET status = 'cancelled' WHERE id = %s", [order.pk])

    run = jobs.reconcile_stock()

    assert [(b["invariant"], b["check"], b["row"]["level_id"]) for b in run.breaches] == [
        (3, "reserved_vs_allocations", level.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_reconciliation_checks_what_purchase_orders_received_against_the_ledger():
    _stock()
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 5), ("TEA", 2)])
    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 5), ("TEA", 2)])
    assert jobs.reconcile_stock().outcome == ReconciliationRun.Outcome.CLEAN
    with connection.cursor() as cursor:
        # The line claims a unit no receipt row added, and the order still reads received.
        cursor.execute(
            "UPDATE inventory_purchaseorderline SET received = received - 1"
            " WHERE purchase_order_id = %s AND ordered = 2 RETURNING id",
            [po.pk],
        )
        tea_line = cursor.fetchone()[0]

    run = jobs.reconcile_stock()

    assert [(b["invariant"], b["check"], b["row"]["line_id"]) for b in run.breaches] == [
        (2, "purchase_order_receipts", tea_line)
    ]
    assert {k: run.breaches[0]["row"][k] for k in ("status", "ordered", "received", "ledger_received")} == {
        "status": "received",
        "ordered": 2,
        "received": 1,
        "ledger_received": 2,
    }


@pytest.mark.django_db(transaction=True)
def test_reconciliation_checks_shipped_and_returned_units_per_line():
    _stock()
    order = _place(UserFactory(), ("MUG", 2), ("TEA", 1))
    services.order_pay(order_id=order.pk)
    mug = OrderLine.objects.get(order=order, product__sku="MUG")
    shipment = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(mug.pk, 2)]
    )
    services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk)
    assert jobs.reconcile_stock().outcome == ReconciliationRun.Outcome.CLEAN
    with connection.cursor() as cursor:
        # A second pending parcel of the same units: promised twice, invariant 6 only.
        cursor.execute(
            """
            INSERT INTO orders_shipment (order_id, warehouse_id, status, carrier, tracking_number, version, created_at)
            SELECT order_id, warehouse_id, 'pending', '', '', 1, now() FROM orders_shipment WHERE id = %s
            RETURNING id
            """,
            [shipment.pk],
        )
        twin = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO orders_shipmentline (shipment_id, line_id, quantity) VALUES (%s, %s, 1)", [twin, mug.pk]
        )

    run = jobs.reconcile_stock()

    assert [(b["invariant"], b["check"], b["row"]["line_id"]) for b in run.breaches] == [
        (6, "shipments_vs_lines", mug.pk)
    ]
    assert (run.breaches[0]["row"]["shipped"], run.breaches[0]["row"]["pending"]) == (2, 1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_reconciliation_finds_no_breach_after_the_demo_data():
    from project.demo import load_demo_data

    for _ in load_demo_data():
        pass

    run = jobs.reconcile_stock()

    assert run.outcome == ReconciliationRun.Outcome.CLEAN, run.breaches
    assert run.levels_checked > 0


@pytest.mark.django_db(transaction=True)
def test_reconciliation_is_a_singleton():
    with other_connection() as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(jobs.RECONCILE_LOCK)])

        assert jobs.reconcile_stock() is None

    assert jobs.reconcile_stock() is not None


def test_reconciliation_refuses_to_run_inside_a_transaction(db):
    with pytest.raises(RuntimeError, match="outside"):
        jobs.reconcile_stock()


# --- order emails ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_order_email_names_the_order_and_its_items(db, kind):
    _stock()
    order = _place(UserFactory(email="ada@example.com"), ("MUG", 2))
    mail.outbox = []

    assert tasks.send_order_email(order.pk, kind) is True

    [email] = mail.outbox
    assert email.to == ["ada@example.com"]
    assert order.number in email.subject
    assert "2 x" in email.body and "(MUG)" in email.body


def test_a_batch_of_emails_reads_its_orders_and_their_lines_in_one_query(db):
    _stock()
    first = _place(UserFactory(email="ada@example.com"), ("TEA", 1), ("MUG", 3))
    second = _place(UserFactory(email="bob@example.com"), ("JAR", 2))
    mail.outbox = []

    with CaptureQueriesContext(connection) as queries, order_emails_sender(order_ids=[first.pk, second.pk]) as send:
        sent = [send(first.pk, "placed"), send(999_999, "placed"), send(second.pk, "paid")]

    assert sent == [True, False, True]
    assert len(queries) == 1
    ada, bob = mail.outbox
    assert ada.to == ["ada@example.com"] and bob.to == ["bob@example.com"]
    lines = {line.strip() for line in ada.body.splitlines() if " x " in line}
    assert lines == {f"{line.quantity} x {line.product.name} ({line.product.sku})" for line in first.lines.all()}
    assert len(lines) == 2
    assert "2 x" in bob.body and "(JAR)" in bob.body and "(MUG)" not in bob.body


def test_an_email_for_an_order_that_no_longer_exists_is_skipped(db):
    assert tasks.send_order_email(999_999, "placed") is False
    assert mail.outbox == []


def test_order_transitions_enqueue_their_email_in_their_own_transaction(db):
    _stock()
    order = _place(UserFactory(), ("MUG", 1))
    services.order_pay(order_id=order.pk)
    services.order_fulfil(order_id=order.pk)

    kinds = [m.kwargs["kind"] for m in OutboxMessage.objects.filter(kwargs__order_id=order.pk).order_by("pk")]
    assert kinds == ["placed", "paid", "fulfilled"]


def test_an_over_long_list_of_order_ids_is_refused_before_any_id_is_looked_at():
    class Unlookable(int):
        def __lt__(self, other):
            raise AssertionError("an id was compared")

        def __hash__(self):
            raise AssertionError("an id was hashed")

    too_many = [Unlookable(1)] * (jobs.BULK_FULFIL_MAX_ORDERS + 1)

    with pytest.raises(InvalidInput) as refused:
        jobs.order_ids_checked(too_many)

    assert refused.value.fields == {"order_ids": [f"At most {jobs.BULK_FULFIL_MAX_ORDERS} orders at once."]}
