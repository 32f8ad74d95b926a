"""The delivery engine end to end: a REAL Celery worker process on the webhooks queue (threads pool,
concurrency 8, as bin/webhooks runs it) delivering to a REAL HTTP receiver on a loopback port.
The receiver verifies every request with the Standard Webhooks reference library.

The worker is told through its environment what these tests need: loopback allowed (for these
tests only), short retries, short claims. Beside each worker a thread of the test publishes
`webhooks.dispatch` every half second, as beat does in production (retries fall due, and the
claims of a killed worker run out, with nobody to kick the dispatcher). Outcomes are polled with
deadlines, never slept for.
"""

import contextlib
import threading
from collections import defaultdict

import pytest
from django.conf import settings
from django.db import transaction

from project.celery import app
from project.outbox.models import OutboxMessage
from project.webhooks import services
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.project.webhooks.support import Receiver, webhooks_worker
from tests.reliability.support import celery_worker, kill_whole_worker
from tests.support import ROOT, closed_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def empty_webhooks_queue():
    """This run's webhooks queue starts empty (TEST_RUN_ID keeps other runs' apart)."""
    with app.connection_for_write() as connection, contextlib.suppress(Exception):  # a queue never declared yet
        connection.default_channel.queue_purge(settings.WEBHOOK_QUEUE)


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def endpoint_at(receiver: Receiver, path: str, make_endpoint, **fields) -> WebhookEndpoint:
    endpoint = make_endpoint(url=receiver.url(path), **fields)
    receiver.route(path, endpoint.secret)
    return endpoint


def emit(events: list[tuple[str, str]], type: str = "test.ping") -> None:
    """Emit (key, ordering key) events of `type` in one committed transaction."""
    with transaction.atomic():
        services.webhook_emit_many(type=type, events=[(key, {"key": key}, ordering) for key, ordering in events])


def keys(requests) -> list[str]:
    return [request.event["data"]["key"] for request in requests]


def test_events_arrive_signed_and_verified(tmp_path, receiver, make_endpoint):
    endpoint = endpoint_at(receiver, "/a", make_endpoint)
    with webhooks_worker(tmp_path):
        emit([("e1", "order:A"), ("e2", "order:A"), ("e3", "")])
        wait_for(lambda: len(receiver.accepted("/a")) == 3, timeout=30, what="three events at the receiver")

    requests = receiver.requests("/a")
    assert len(requests) == 3 and all(request.verified for request in requests)
    events = {event.key: event for event in WebhookEvent.objects.all()}
    for request in requests:
        event = events[request.event["data"]["key"]]
        assert request.webhook_id == event.webhook_id
        assert request.event["type"] == "test.ping"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "Stockroom-Webhooks/1"
    assert keys(requests).index("e1") < keys(requests).index("e2")
    assert set(WebhookDelivery.objects.filter(endpoint=endpoint).values_list("state", "attempts")) == {("succeeded", 1)}


def test_an_endpoint_down_then_up_gets_every_event_once_in_order_per_key(tmp_path, receiver, make_endpoint):
    endpoint_at(receiver, "/flaky", make_endpoint, max_concurrency=4)
    route = receiver.routes["/flaky"]
    route.status = 503
    sent = [("a1", "order:A"), ("b1", "order:B"), ("a2", "order:A"), ("a3", "order:A"), ("b2", "order:B")]
    with webhooks_worker(tmp_path):
        emit(sent)
        wait_for(lambda: len(receiver.requests("/flaky")) >= 6, timeout=30, what="a few failed attempts")
        # While it is down only the head of each ordering key is tried, again and again.
        assert set(keys(receiver.requests("/flaky"))) == {"a1", "b1"}
        route.status = 200
        wait_for(lambda: len(receiver.accepted("/flaky")) == 5, timeout=30, what="the backlog once the endpoint is up")

    accepted = keys(receiver.accepted("/flaky"))
    assert sorted(accepted) == sorted(key for key, _ in sent)  # each event once
    assert [key for key in accepted if key.startswith("a")] == ["a1", "a2", "a3"]
    assert [key for key in accepted if key.startswith("b")] == ["b1", "b2"]
    assert WebhookDelivery.objects.filter(event__key="a1").get().attempts >= 2
    assert not WebhookDelivery.objects.exclude(state="succeeded").exists()
    assert WebhookEndpoint.objects.get().consecutive_failures == 0


def test_a_receiver_that_hangs_does_not_hold_up_another_endpoint(tmp_path, receiver, make_endpoint):
    gate = threading.Event()
    endpoint_at(receiver, "/hangs", make_endpoint, events=["test.other"], max_concurrency=2)
    receiver.routes["/hangs"].gate = gate
    endpoint_at(receiver, "/fast", make_endpoint)
    with webhooks_worker(tmp_path, WEBHOOK_TIMEOUT_SECONDS="60"):
        emit([(f"h{n}", "") for n in range(4)], type="test.other")
        wait_for(lambda: receiver.routes["/hangs"].in_flight == 2, timeout=30, what="two requests hanging")
        emit([(f"f{n}", "") for n in range(6)])
        wait_for(lambda: len(receiver.accepted("/fast")) == 6, timeout=30, what="the other endpoint's events")
        # Meanwhile the hanging endpoint still holds its two, and got no more.
        assert receiver.routes["/hangs"].in_flight == 2
        assert len(receiver.requests("/hangs")) == 2
        gate.set()
        wait_for(lambda: len(receiver.accepted("/hangs")) == 4, timeout=30, what="the hanging endpoint's events")
    assert receiver.routes["/hangs"].most_in_flight == 2


def test_a_worker_killed_mid_delivery_loses_nothing_and_a_rolled_back_event_is_never_sent(
    tmp_path, receiver, make_endpoint
):
    gate = threading.Event()
    endpoint_at(receiver, "/slow", make_endpoint)
    receiver.routes["/slow"].gate = gate
    short_claims = {"WEBHOOK_TIMEOUT_SECONDS": "3", "WEBHOOK_CLAIM_MARGIN_SECONDS": "1"}
    with webhooks_worker(tmp_path, "first", **short_claims) as first:
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            services.webhook_emit(type="test.ping", key="rolled-back", payload={"key": "rolled-back"})
            1 / 0  # noqa: B018 - the change that emitted fails
        emit([("kept", "")])
        wait_for(lambda: receiver.routes["/slow"].in_flight == 1, timeout=30, what="the attempt in flight")
        kill_whole_worker(first)  # mid-POST: nothing gets to record the attempt
    gate.set()
    (row,) = WebhookDelivery.objects.all()
    assert row.state == "delivering" and row.attempts == 1
    with webhooks_worker(tmp_path, "second", **short_claims):
        wait_for(
            lambda: WebhookDelivery.objects.filter(pk=row.pk, state="succeeded").exists(),
            timeout=60,
            what="the delivery to be made again once the claim ran out",
        )

    first_try, second_try = receiver.requests("/slow")
    assert first_try.verified and second_try.verified
    assert first_try.webhook_id == second_try.webhook_id == WebhookEvent.objects.get(key="kept").webhook_id
    assert first_try.body == second_try.body  # the same bytes, signed again
    row.refresh_from_db()
    assert row.attempts == 2
    assert "rolled-back" not in keys(receiver.requests())
    assert not WebhookEvent.objects.filter(key="rolled-back").exists()


def test_an_endpoint_failing_past_the_threshold_is_switched_off_and_staff_are_told(tmp_path, make_endpoint):
    endpoint = make_endpoint(url=f"http://127.0.0.1:{closed_port()}/gone")
    env = {
        "WEBHOOK_DISABLE_AFTER_FAILURES": "3",
        "WEBHOOK_DISABLE_AFTER_HOURS": "0",
        "STAFF_ALERT_EMAILS": "ops@example.com",
    }
    with webhooks_worker(tmp_path, **env):
        emit([("x1", ""), ("x2", "")])
        wait_for(
            lambda: not WebhookEndpoint.objects.get(pk=endpoint.pk).active, timeout=60, what="the endpoint switched off"
        )
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures >= 3
    assert endpoint.disabled_reason.startswith("Switched off after")
    (message,) = OutboxMessage.objects.filter(task="webhooks.send_endpoint_disabled_email")
    assert message.kwargs["recipients"] == ["ops@example.com"]
    assert "Connection refused" in message.kwargs["last_error"]
    # Its deliveries wait for the endpoint to come back (they are not failed for good).
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"pending"}


def test_an_endpoint_never_has_more_deliveries_in_flight_than_its_cap(tmp_path, receiver, make_endpoint):
    endpoint_at(receiver, "/capped", make_endpoint, max_concurrency=2)
    route = receiver.routes["/capped"]
    # Each request is held until a third one is in flight, or a second has passed: a second request
    # arrives meanwhile (real overlap), and a third would be there to count if the cap let it through
    # (the worker has 8 threads).
    route.wait_for_company, route.hold_seconds = 3, 1.0
    with webhooks_worker(tmp_path):
        emit([(f"c{n}", "") for n in range(10)])
        wait_for(lambda: len(receiver.accepted("/capped")) == 10, timeout=60, what="ten events")
    assert route.most_in_flight == 2
    per_key = defaultdict(int)
    for key in keys(receiver.requests("/capped")):
        per_key[key] += 1
    assert set(per_key.values()) == {1}


def test_only_the_webhooks_worker_consumes_the_webhooks_queue(tmp_path):
    """bin/worker (no --queues: the default queue) never takes a delivery; bin/webhooks takes nothing else."""
    with (
        celery_worker(tmp_path / "default.log") as default,
        celery_worker(tmp_path / "webhooks.log", queues=settings.WEBHOOK_QUEUE, pool="threads", concurrency=2),
    ):
        replies = wait_for(
            lambda: (lambda found: found if found and len(found) == 2 else None)(
                app.control.inspect(timeout=2).active_queues()
            ),
            timeout=30,
            what="both workers to answer",
        )
        assert default.poll() is None
    consumed = sorted(sorted(queue["name"] for queue in queues) for queues in replies.values())
    assert consumed == sorted([[settings.CELERY_TASK_DEFAULT_QUEUE], [settings.WEBHOOK_QUEUE]])
    script = (ROOT / "bin" / "webhooks").read_text()
    assert '--queues "${CELERY_QUEUE_PREFIX:-stockroom}.webhooks"' in script and "--pool threads" in script
    assert "webhooks: bin/webhooks" in (ROOT / "Procfile").read_text().splitlines()
    assert "--queues" not in (ROOT / "bin" / "worker").read_text()


def test_a_backlog_to_one_endpoint_flows_without_a_message_per_delivery(tmp_path, receiver, make_endpoint):
    """A thread that finished a delivery claims the endpoint's next due one itself (deliver_chain):
    thirty deliveries to an endpoint with one slot take far fewer `webhooks.deliver` messages."""
    endpoint_at(receiver, "/backlog", make_endpoint, max_concurrency=1)
    with webhooks_worker(tmp_path, "chain", WEBHOOK_DELIVER_CHAIN="100"):
        emit([(f"k{n}", "") for n in range(30)])
        wait_for(lambda: len(receiver.accepted("/backlog")) == 30, timeout=60, what="thirty events")
    assert sorted(keys(receiver.accepted("/backlog"))) == sorted(f"k{n}" for n in range(30))  # each once
    assert receiver.routes["/backlog"].most_in_flight == 1  # the cap holds along a chain
    messages = (tmp_path / "chain.log").read_text().count("Task webhooks.deliver[")
    assert 0 < messages < 15, messages  # "received" and "succeeded" lines: a few messages, not thirty
