"""Order events end to end: orders placed, paid, cancelled and fulfilled while the receiver is down
reach it once it is up, each once, signed, in the order they happened per order number. A real
Celery worker on the webhooks queue (tests.project.webhooks.support.webhooks_worker) and a real
HTTP receiver that verifies with the Standard Webhooks reference library."""

from collections import defaultdict

import pytest

from orders import services
from project.webhooks.models import WebhookDelivery, WebhookEndpoint
from project.webhooks.signing import new_secret
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import place_reserved
from tests.project.webhooks.support import Receiver, webhooks_worker
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(180)]


def test_order_events_sent_while_the_receiver_is_down_arrive_once_it_is_up_in_order_per_order(tmp_path):
    from inventory import services as stock

    WarehouseFactory(code="MAIN")
    for sku in ("MUG", "TEA"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=10)
    user = UserFactory()
    with Receiver() as receiver:
        secret = new_secret()
        WebhookEndpoint.objects.create(
            url=receiver.url("/shop"),
            secret=secret,
            max_concurrency=4,
            events=["order.placed", "order.paid", "order.cancelled", "order.fulfilled"],
        )
        route = receiver.route("/shop", secret, status=503)
        with webhooks_worker(tmp_path):
            first, second, third = (place_reserved((sku, 1), user=user) for sku in ("MUG", "TEA", "MUG"))
            services.order_pay(order_id=first.pk)
            services.order_cancel(order_id=second.pk)
            services.order_pay(order_id=third.pk)
            services.order_fulfil(order_id=third.pk)
            wait_for(lambda: len(receiver.requests("/shop")) >= 6, timeout=60, what="failed attempts")
            # While it is down only the first event of each order is tried.
            tried = {(r.event["type"], r.event["data"]["order"]["number"]) for r in receiver.requests("/shop")}
            assert tried <= {("order.placed", order.number) for order in (first, second, third)}
            route.status = 200
            wait_for(lambda: len(receiver.accepted("/shop")) == 7, timeout=60, what="every event once it is up")

    accepted = receiver.accepted("/shop")
    assert len(accepted) == len({r.webhook_id for r in accepted}) == 7  # each event once
    per_order = defaultdict(list)
    for request in accepted:
        per_order[request.event["data"]["order"]["number"]].append(request.event["type"])
    assert per_order == {
        first.number: ["order.placed", "order.paid"],
        second.number: ["order.placed", "order.cancelled"],
        third.number: ["order.placed", "order.paid", "order.fulfilled"],
    }
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"succeeded"}
