"""Back-in-stock subscriptions through their services: made only while a product is sold out, once
per shopper and product (also from two threads at once), and ended by the sweep with one outbox
email each, once, whatever brought the product back."""

import threading
import uuid

import pytest
from django.core import mail
from django.db import connection

from inventory import services as stock
from inventory.back_in_stock import (
    back_in_stock_notify,
    back_in_stock_subscribe,
    back_in_stock_unsubscribe,
    back_in_stock_waiting,
    is_waiting,
)
from inventory.emails import SEND_BACK_IN_STOCK
from inventory.errors import InStockNow, InvalidInput
from inventory.models import BackInStockSubscription, Product
from inventory.tasks import back_in_stock_sweep, send_back_in_stock
from orders import services as order_services
from orders.api import render_order
from orders.models import Order
from project.celery import app
from project.errors import NotFound
from project.outbox.models import OutboxMessage
from tests.concurrency.support import run_concurrently
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import ProbingEmailBackend, RelayThread, running_worker
from tests.support import other_connection, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db):
    """MUG in stock (2 in MAIN); TEA and PEN sold out (no stock at all); OLD sold out and inactive."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Blue mug")
    ProductFactory(sku="TEA", name="Green tea")
    ProductFactory(sku="PEN", name="Red pen")
    ProductFactory(sku="OLD", name="Old mug", active=False)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)


def emails_queued() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(task=SEND_BACK_IN_STOCK).order_by("id"))


def place(user, sku: str, quantity: int) -> Order:
    result = order_services.order_place(
        user=user,
        lines=[order_services.OrderLineRequest(sku, quantity)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=f"{sku}x{quantity}",
    )
    return Order.objects.get(number=result.body["number"])


# --- subscribing ---------------------------------------------------------------------------------


def test_a_shopper_can_wait_only_for_a_sold_out_product(shop):
    shopper = UserFactory()

    with pytest.raises(InStockNow) as refused:
        back_in_stock_subscribe(user=shopper, sku="MUG")
    subscription, created = back_in_stock_subscribe(user=shopper, sku="TEA")

    assert refused.value.status_code == 409 and refused.value.code == "in_stock"
    assert created and subscription.product.sku == "TEA" and subscription.notified_at is None
    assert is_waiting(user=shopper, sku="TEA") and not is_waiting(user=shopper, sku="MUG")
    assert [s.product.sku for s in back_in_stock_waiting(user=shopper)] == ["TEA"]


def test_reserved_units_count_as_gone(shop):
    place(UserFactory(), "MUG", 2)

    _, created = back_in_stock_subscribe(user=UserFactory(), sku="MUG")

    assert created


def test_subscribing_twice_while_waiting_returns_the_same_subscription(shop):
    shopper = UserFactory()
    first, created = back_in_stock_subscribe(user=shopper, sku="TEA")

    again, created_again = back_in_stock_subscribe(user=shopper, sku="TEA")

    assert created and not created_again
    assert again.pk == first.pk
    assert BackInStockSubscription.objects.count() == 1


def test_waiting_already_is_answered_even_once_the_product_is_back(shop):
    shopper = UserFactory()
    first, _ = back_in_stock_subscribe(user=shopper, sku="TEA")
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)

    again, created = back_in_stock_subscribe(user=shopper, sku="TEA")

    assert (again.pk, created) == (first.pk, False)  # the sweep emails it shortly


@pytest.mark.parametrize("sku", ["NOPE", "OLD", "", "a/b", "\x00", "x" * 70, None, 7])
def test_unknown_inactive_or_odd_skus_are_not_found(shop, sku):
    with pytest.raises(NotFound):
        back_in_stock_subscribe(user=UserFactory(), sku=sku)
    assert not BackInStockSubscription.objects.exists()


def test_each_shopper_waits_on_their_own(shop):
    ada, bob = UserFactory(), UserFactory()
    back_in_stock_subscribe(user=ada, sku="TEA")

    _, created = back_in_stock_subscribe(user=bob, sku="TEA")

    assert created
    assert not is_waiting(user=bob, sku="PEN")
    assert [s.product.sku for s in back_in_stock_waiting(user=ada)] == ["TEA"]


def test_stopping_ends_only_the_waiting_subscription_and_may_be_repeated(shop):
    shopper = UserFactory()
    back_in_stock_subscribe(user=shopper, sku="TEA")
    back_in_stock_subscribe(user=shopper, sku="PEN")

    assert back_in_stock_unsubscribe(user=shopper, sku="TEA") is True
    assert back_in_stock_unsubscribe(user=shopper, sku="TEA") is False
    assert back_in_stock_unsubscribe(user=shopper, sku="OLD") is False  # inactive: may still stop
    with pytest.raises(NotFound):
        back_in_stock_unsubscribe(user=shopper, sku="NOPE")

    assert [s.product.sku for s in back_in_stock_waiting(user=shopper)] == ["PEN"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_subscribes_at_once_make_one_row_and_both_answer_with_it(shop):
    shopper = UserFactory()

    results = run_concurrently(lambda _: back_in_stock_subscribe(user=shopper, sku="TEA"), 2)

    assert all(isinstance(result, tuple) for result in results), results
    assert len({subscription.pk for subscription, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, True]
    assert BackInStockSubscription.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_subscribe_racing_an_uncommitted_one_waits_for_it_and_answers_with_its_row(shop):
    shopper = UserFactory()
    tea = Product.objects.get(sku="TEA")
    with other_connection() as other:
        with other.transaction():
            other.execute(
                f"INSERT INTO {BackInStockSubscription._meta.db_table} (user_id, product_id, created_at)"  # noqa: S608
                " VALUES (%s, %s, now())",
                [shopper.pk, tea.pk],
            )
            # Not visible yet: the service passes its checks and its INSERT waits on the index.
            results: list = []
            racing = threading.Thread(target=lambda: results.append(_subscribe_in_thread(shopper)))
            racing.start()
            wait_for(lambda: _waiting_on_a_lock(other), timeout=10, what="the INSERT to wait for the other one")
        racing.join(timeout=10)

    (result,) = results
    subscription, created = result
    assert not created
    assert BackInStockSubscription.objects.get().pk == subscription.pk


def _subscribe_in_thread(shopper):
    try:
        return back_in_stock_subscribe(user=shopper, sku="TEA")
    finally:
        connection.close()


def _waiting_on_a_lock(other) -> bool:
    row = other.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()
    return row[0] > 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_many_shoppers_and_repeats_at_once_make_one_row_each(shop):
    shoppers = UserFactory.create_batch(4)

    results = run_concurrently(lambda i: back_in_stock_subscribe(user=shoppers[i % 4], sku="TEA"), 12)

    assert all(isinstance(result, tuple) for result in results), results
    assert sum(created for _, created in results) == 4
    assert sorted(BackInStockSubscription.objects.values_list("user_id", flat=True)) == sorted(s.pk for s in shoppers)


# --- the sweep -----------------------------------------------------------------------------------


def test_the_sweep_queues_one_email_per_subscriber_once_and_ends_the_subscriptions(shop):
    ada, bob, cy = UserFactory(), UserFactory(), UserFactory()
    for shopper in (ada, bob):
        back_in_stock_subscribe(user=shopper, sku="TEA")
    back_in_stock_subscribe(user=cy, sku="PEN")  # still sold out
    assert back_in_stock_notify() == 0

    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    assert back_in_stock_notify() == 2

    ended = BackInStockSubscription.objects.filter(product__sku="TEA").order_by("id")
    assert all(s.notified_at is not None for s in ended)
    assert [m.kwargs for m in emails_queued()] == [{"subscription_id": s.pk} for s in ended]
    assert mail.outbox == []  # sent by the task, after commit, never by the sweep
    assert not is_waiting(user=ada, sku="TEA") and is_waiting(user=cy, sku="PEN")

    assert back_in_stock_notify() == 0  # once: a second run sends nothing more
    assert back_in_stock_sweep() == 0
    assert len(emails_queued()) == 2


def test_after_the_email_a_shopper_may_wait_again_when_it_sells_out_again(shop):
    shopper = UserFactory()
    first, _ = back_in_stock_subscribe(user=shopper, sku="TEA")
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    back_in_stock_notify()
    stock.stock_adjust(sku="TEA", warehouse_code="MAIN", delta=-1)

    again, created = back_in_stock_subscribe(user=shopper, sku="TEA")

    assert created and again.pk != first.pk
    assert back_in_stock_unsubscribe(user=shopper, sku="TEA") is True
    assert BackInStockSubscription.objects.filter(pk=first.pk, notified_at__isnull=False).exists()  # history


def test_a_cancelled_order_bringing_the_product_back_triggers_the_email(shop):
    order = place(UserFactory(), "MUG", 2)
    shopper = UserFactory()
    back_in_stock_subscribe(user=shopper, sku="MUG")
    assert back_in_stock_notify() == 0

    order_services.order_cancel(order_id=order.pk)

    assert back_in_stock_notify() == 1
    assert not is_waiting(user=shopper, sku="MUG")


def test_a_stock_adjustment_bringing_the_product_back_triggers_the_email(shop):
    back_in_stock_subscribe(user=UserFactory(), sku="PEN")

    stock.stock_adjust(sku="PEN", warehouse_code="MAIN", delta=3, note="found a box")

    assert back_in_stock_notify() == 1


def test_stock_only_in_an_inactive_warehouse_is_not_back(shop):
    back_in_stock_subscribe(user=UserFactory(), sku="PEN")
    WarehouseFactory(code="SHUT", active=False)
    stock.stock_receive(sku="PEN", warehouse_code="SHUT", quantity=5)

    assert back_in_stock_notify() == 0


def test_inactive_products_are_skipped_until_they_are_sold_again(shop):
    back_in_stock_subscribe(user=UserFactory(), sku="TEA")
    Product.objects.filter(sku="TEA").update(active=False)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=4)

    assert back_in_stock_notify() == 0
    assert BackInStockSubscription.objects.filter(notified_at__isnull=True).count() == 1

    Product.objects.filter(sku="TEA").update(active=True)
    assert back_in_stock_notify() == 1


def test_deactivated_accounts_are_not_emailed(shop):
    gone = UserFactory()
    back_in_stock_subscribe(user=gone, sku="TEA")
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=4)

    assert back_in_stock_notify() == 0


def test_the_sweep_takes_at_most_its_limit_oldest_first_and_the_rest_next_time(shop):
    shoppers = UserFactory.create_batch(3)
    made = [back_in_stock_subscribe(user=shopper, sku="TEA")[0].pk for shopper in shoppers]
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)

    assert back_in_stock_notify(limit=2) == 2
    assert [m.kwargs["subscription_id"] for m in emails_queued()] == made[:2]
    assert back_in_stock_notify(limit=2) == 1
    assert back_in_stock_notify(limit=2) == 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, "10", None, 10**9])
def test_a_bad_limit_is_refused(shop, limit):
    with pytest.raises(InvalidInput):
        back_in_stock_notify(limit=limit)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_subscription_locked_by_another_sweep_is_skipped_not_waited_for(shop):
    held, free = (back_in_stock_subscribe(user=UserFactory(), sku="TEA")[0] for _ in range(2))
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)

    with other_connection() as other, other.transaction():
        other.execute(
            f"SELECT id FROM {BackInStockSubscription._meta.db_table} WHERE id = %s FOR UPDATE",  # noqa: S608
            [held.pk],
        )
        assert back_in_stock_notify() == 1  # returns at once: SKIP LOCKED

    assert [m.kwargs["subscription_id"] for m in emails_queued()] == [free.pk]
    assert back_in_stock_notify() == 1  # the other one, now that it is free
    assert not connection.in_atomic_block


# --- the email -----------------------------------------------------------------------------------


def test_the_email_names_the_product_and_links_to_its_page(shop):
    shopper = UserFactory(email="ada@example.com")
    back_in_stock_subscribe(user=shopper, sku="TEA")
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    back_in_stock_notify()
    (message,) = emails_queued()

    assert send_back_in_stock(*message.args, **message.kwargs) is True

    (sent,) = mail.outbox
    assert sent.to == ["ada@example.com"]
    assert sent.subject == "Back in stock: Green tea"
    assert "Green tea (TEA) is back in stock" in sent.body
    assert "/products/TEA/" in sent.body


def test_a_bad_or_stale_email_message_is_refused_without_mail(shop):
    assert send_back_in_stock(subscription_id="1") is False
    assert send_back_in_stock(subscription_id=0) is False
    assert send_back_in_stock(subscription_id=True) is False
    assert send_back_in_stock(subscription_id=10**12) is False  # no such subscription (account deleted)
    assert mail.outbox == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_back_in_stock_emails_are_mailed_by_the_worker_outside_any_transaction_with_their_message_ids(shop, settings):
    settings.EMAIL_BACKEND = "tests.project.outbox.support.ProbingEmailBackend"
    ProbingEmailBackend.reset()
    for email in ("ada@example.com", "bob@example.com"):
        back_in_stock_subscribe(user=UserFactory(email=email), sku="TEA")
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    try:
        with running_worker(), RelayThread() as relay:
            assert back_in_stock_sweep() == 2
            messages = emails_queued()
            wait_for(
                lambda: all(OutboxMessage.objects.get(pk=m.pk).state == OutboxMessage.State.DONE for m in messages),
                timeout=20,
                what="the back-in-stock emails to be sent",
            )
        assert relay.error is None
        probes = list(ProbingEmailBackend.probes)
    finally:
        ProbingEmailBackend.reset()
        app.control.purge()

    assert probes and all(p["in_atomic_block"] is False and p["locks"] == [] for p in probes)
    assert sorted(sent.to[0] for sent in mail.outbox) == ["ada@example.com", "bob@example.com"]
    sent_ids = sorted(sent.message()["Message-ID"] for sent in mail.outbox)
    assert all(any(f"<outbox.{m.pk}." in sent_id for sent_id in sent_ids) for m in messages)
    assert back_in_stock_notify() == 0
