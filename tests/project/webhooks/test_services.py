"""The webhook services against the real database, in-process: emitting, the dispatcher's choice
(head of line, per-endpoint cap), claims, records, endpoint health and staff's "send again"."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry

from project.errors import InvalidInput, NotFound
from project.outbox.models import OutboxMessage
from project.webhooks import delivery, services
from project.webhooks.events import event_types as registered_types
from project.webhooks.events import register_event_types, validate_event_types
from project.webhooks.metrics import DeliveryBacklog
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from project.webhooks.tasks import send_endpoint_disabled_email
from tests.project.webhooks.support import Receiver

pytestmark = pytest.mark.django_db

Delivery = WebhookDelivery.State


def emit(key: str, ordering_key: str = "", type: str = "test.ping", **payload) -> int | None:
    return services.webhook_emit(type=type, key=key, payload=payload or {"key": key}, ordering_key=ordering_key)


def deliveries(**filters) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(**filters).order_by("id"))


def fail(claimed, error="HTTP 500") -> services.AttemptOutcome:
    return services.delivery_record(claimed=claimed, status=500, error=error, duration_ms=3)


def claim(delivery_id: int):
    return services.delivery_claim(delivery_id=delivery_id, lease_seconds=30)


# --- the event registry ----------------------------------------------------------------------------


def test_event_types_are_validated_against_the_registry(event_types):
    assert validate_event_types(["test.ping", "test.other", "test.ping"]) == ["test.ping", "test.other"]
    for bad, message in [
        ("test.ping", "Must be a list"),
        ([], "at least one"),
        (["test.nope"], "Unknown event type"),
        ([1], "Unknown event type"),
        (["test.ping"] * 101, "At most 100"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            validate_event_types(bad)
        assert message in refused.value.fields["events"][0]
    assert registered_types()["test.ping"] == "A test event."


def test_a_type_is_registered_once_with_one_description(event_types):
    register_event_types({"test.ping": "A test event."})  # again, the same: fine
    with pytest.raises(ValueError, match="another description"):
        register_event_types({"test.ping": "Something else."})
    with pytest.raises(ValueError, match="not an event type name"):
        register_event_types({"NoDots": "x"})


# --- emitting --------------------------------------------------------------------------------------


def test_with_no_endpoint_wanting_the_type_emitting_writes_nothing_in_one_query(
    make_endpoint, django_assert_num_queries
):
    make_endpoint(events=["test.other"])
    make_endpoint(active=False)
    with django_assert_num_queries(1):
        assert emit("k1") is None
    assert not WebhookEvent.objects.exists() and not WebhookDelivery.objects.exists()
    assert services.webhook_wanted("test.ping") is False


def test_an_event_gets_one_delivery_per_active_endpoint_wanting_it_and_a_key_emits_once(make_endpoint):
    wanting = [make_endpoint(), make_endpoint(events=["test.other", "test.ping"])]
    make_endpoint(events=["test.other"])
    make_endpoint(active=False)

    assert emit("order:1:placed", ordering_key="order:R-1") == 2
    assert emit("order:1:placed", ordering_key="order:R-1") is None  # a second delivery of the cause
    (event,) = WebhookEvent.objects.all()
    assert event.webhook_id.startswith("msg_") and event.payload == {"key": "order:1:placed"}
    assert event.ordering_key == "order:R-1"
    assert [(d.endpoint_id, d.state, d.attempts, d.ordering_key) for d in deliveries()] == [
        (endpoint.pk, Delivery.PENDING, 0, "order:R-1") for endpoint in wanting
    ]


def test_a_batch_keeps_its_order_and_skips_keys_seen_before(make_endpoint):
    make_endpoint()
    emit("b")
    written = services.webhook_emit_many(
        type="test.ping", events=[("a", {"n": 1}, "k"), ("b", {"n": 2}, "k"), ("c", {"n": 3}, "k")]
    )
    assert written == 2
    assert list(WebhookEvent.objects.order_by("id").values_list("key", flat=True)) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([("k", {"x": {1, 2}}, "")], "must be JSON"),
        ([("k", {"x": float("nan")}, "")], "must be JSON"),
        ([("k", ["not", "a", "dict"], "")], "JSON object"),
        ([("", {}, "")], "key is 1 to 200"),
        ([("k" * 201, {}, "")], "key is 1 to 200"),
        ([("k", {}, "o" * 201)], "ordering key"),
        ([("k", {})], "(key, payload, ordering key)"),
        ([("k", {}, "")] * 1001, "at most 1000"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(make_endpoint, events, message):
    make_endpoint()
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        services.webhook_emit_many(type="test.ping", events=[("fine", {}, ""), *events])
    assert not WebhookEvent.objects.exists()


def test_an_unregistered_type_is_refused(make_endpoint):
    make_endpoint(events=["test.ping"])
    with pytest.raises(InvalidInput, match="not a registered"):
        services.webhook_emit(type="test.unknown", key="k", payload={})


@pytest.mark.django_db(transaction=True)
def test_emitting_needs_the_callers_transaction_and_rolls_back_with_it(make_endpoint):
    make_endpoint()
    with pytest.raises(RuntimeError, match="inside a transaction"):
        emit("outside")
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        assert emit("rolled-back") == 1
        1 / 0  # noqa: B018 - the caller's change fails after the emit
    assert not WebhookEvent.objects.exists() and not WebhookDelivery.objects.exists()


# --- the dispatcher ----------------------------------------------------------------------------------


def test_the_dispatcher_hands_out_only_the_head_of_each_ordering_key(make_endpoint):
    make_endpoint(max_concurrency=10)
    for key, ordering in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("n1", ""), ("a3", "A"), ("n2", "")]:
        emit(key, ordering_key=ordering)
    ids = {d.event.key: d.pk for d in WebhookDelivery.objects.select_related("event")}

    assert services.deliveries_dispatch(limit=100) == [ids["a1"], ids["b1"], ids["n1"], ids["n2"]]
    assert services.deliveries_dispatch(limit=100) == []  # handed out: not again while the mark lives

    # a1 fails and waits for its retry: a2 still waits behind it, retries included.
    fail(claim(ids["a1"]))
    assert WebhookDelivery.objects.get(pk=ids["a1"]).state == Delivery.PENDING
    assert ids["a2"] not in services.deliveries_dispatch(limit=100)
    # a1 succeeds at last: a2 is next, then a3.
    WebhookDelivery.objects.filter(pk=ids["a1"]).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert services.deliveries_dispatch(limit=100) == [ids["a1"]]
    services.delivery_record(claimed=claim(ids["a1"]), status=204, error="", duration_ms=1)
    assert services.deliveries_dispatch(limit=100) == [ids["a2"]]


def test_the_dispatcher_keeps_each_endpoint_under_its_cap(make_endpoint):
    narrow = make_endpoint(max_concurrency=2)
    wide = make_endpoint(max_concurrency=5, events=["test.other"])
    for n in range(6):
        emit(f"n{n}")
        emit(f"o{n}", type="test.other")
    first = services.deliveries_dispatch(limit=100)
    assert sum(1 for d in deliveries(pk__in=first) if d.endpoint_id == narrow.pk) == 2
    assert sum(1 for d in deliveries(pk__in=first) if d.endpoint_id == wide.pk) == 5
    assert services.deliveries_dispatch(limit=100) == []  # handed out counts as in flight

    # One attempt finishes: one more of that endpoint may go.
    narrow_ids = [d.pk for d in deliveries(pk__in=first, endpoint=narrow)]
    services.delivery_record(claimed=claim(narrow_ids[0]), status=200, error="", duration_ms=1)
    (more,) = services.deliveries_dispatch(limit=100)
    assert WebhookDelivery.objects.get(pk=more).endpoint_id == narrow.pk


def test_an_endpoint_with_a_big_backlog_does_not_crowd_another_out_of_a_round(make_endpoint):
    busy = make_endpoint(max_concurrency=2)
    other = make_endpoint(events=["test.other"])
    services.webhook_emit_many(type="test.ping", events=[(f"b{n}", {}, "") for n in range(500)])
    emit("late", type="test.other")  # due after all 500 of the busy endpoint
    handed_out = deliveries(pk__in=services.deliveries_dispatch(limit=10))
    assert sorted(d.endpoint_id for d in handed_out) == sorted([busy.pk, busy.pk, other.pk])


def test_the_claim_holds_the_cap_exactly_whatever_was_handed_out(make_endpoint):
    make_endpoint(max_concurrency=1)
    emit("x")
    emit("y")
    first, second = (d.pk for d in deliveries())
    assert claim(first) is not None
    assert claim(second) is None  # the endpoint has one in flight already
    assert WebhookDelivery.objects.get(pk=second).claimed_until is None  # free for the next round


def test_a_live_claim_is_not_claimed_twice_and_a_finished_delivery_not_again(make_endpoint):
    make_endpoint()
    emit("x")
    (delivery_id,) = services.deliveries_dispatch(limit=10)
    claimed = claim(delivery_id)
    assert (claimed.attempt, claimed.type, claimed.payload) == (1, "test.ping", {"key": "x"})
    assert claim(delivery_id) is None  # the Celery message delivered a second time
    services.delivery_record(claimed=claimed, status=200, error="", duration_ms=5)
    assert claim(delivery_id) is None
    row = WebhookDelivery.objects.get(pk=delivery_id)
    assert (row.state, row.attempts, row.last_status, row.claimed_until) == (Delivery.SUCCEEDED, 1, 200, None)
    assert row.delivered_at is not None


def test_a_claim_that_ran_out_is_handed_out_again_and_the_late_record_is_ignored(make_endpoint):
    make_endpoint()
    emit("x")
    (delivery_id,) = services.deliveries_dispatch(limit=10)
    dead = claim(delivery_id)  # this worker "dies" mid-attempt
    WebhookDelivery.objects.filter(pk=delivery_id).update(claimed_until=timezone.now() - timedelta(seconds=1))

    assert services.deliveries_dispatch(limit=10) == [delivery_id]
    again = claim(delivery_id)
    assert again.attempt == 2 and again.webhook_id == dead.webhook_id
    assert services.delivery_record(claimed=dead, status=200, error="", duration_ms=1).state == ""  # not its claim
    assert services.delivery_record(claimed=again, status=200, error="", duration_ms=1).state == "succeeded"


def test_an_inactive_endpoints_deliveries_wait(make_endpoint):
    endpoint = make_endpoint()
    emit("x")
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False)
    assert services.deliveries_dispatch(limit=10) == []
    assert claim(deliveries()[0].pk) is None


# --- recording and health ------------------------------------------------------------------------------


def test_failures_follow_the_retry_schedule_then_fail(make_endpoint, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = [0, 3600]
    make_endpoint()
    emit("x")
    (row,) = deliveries()
    assert fail(claim(row.pk), "HTTP 503: busy").state == "pending"  # retry due at once (0 s)
    assert fail(claim(row.pk)).state == "pending"  # retry in an hour
    assert claim(row.pk) is None  # not due
    WebhookDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert fail(claim(row.pk), "x" * 5000).state == "failed"
    row.refresh_from_db()
    assert (row.state, row.attempts, row.last_status, len(row.last_error)) == (Delivery.FAILED, 3, 500, 1000)


def test_a_success_resets_the_endpoint_and_pulls_its_waiting_deliveries_forward(make_endpoint, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = [3600] * 5
    endpoint = make_endpoint(max_concurrency=5)
    for key in ("a", "b", "c"):
        emit(key)
    a, b, c = deliveries()
    fail(claim(a.pk))
    fail(claim(b.pk))
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 2 and endpoint.failing_since is not None
    assert claim(a.pk) is None  # waiting an hour

    services.delivery_record(claimed=claim(c.pk), status=201, error="", duration_ms=1)
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.failing_since) == (0, None)
    assert set(services.deliveries_dispatch(limit=10)) == {a.pk, b.pk}  # due now, not in an hour


def test_an_endpoint_failing_long_enough_is_switched_off_and_staff_are_emailed(make_endpoint, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOK_DISABLE_AFTER_HOURS = 1
    settings.STAFF_ALERT_EMAILS = ["ops@example.com"]
    endpoint = make_endpoint(max_concurrency=10)
    for key in "abcd":
        emit(key)
    a, b, c, d = deliveries()
    for row in (a, b, c):
        assert fail(claim(row.pk)).endpoint_disabled is False  # 3 in a row, but not for an hour yet
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(hours=2))

    assert fail(claim(d.pk), "cannot connect to hooks.example.com: Connection refused").endpoint_disabled is True
    endpoint.refresh_from_db()
    assert endpoint.active is False and "4 failed attempts" in endpoint.disabled_reason
    assert endpoint.version == 2  # a staff form opened before this is stale
    assert services.deliveries_dispatch(limit=10) == []  # its deliveries wait
    (message,) = OutboxMessage.objects.filter(task="webhooks.send_endpoint_disabled_email")
    assert message.kwargs["recipients"] == ["ops@example.com"] and message.kwargs["endpoint_id"] == endpoint.pk

    assert send_endpoint_disabled_email.run(**message.kwargs) is True
    (sent,) = mail.outbox
    assert sent.to == ["ops@example.com"] and endpoint.url in sent.subject and "Connection refused" in sent.body


def test_a_bad_email_message_is_refused_without_sending(caplog):
    assert send_endpoint_disabled_email.run(recipients="ops@example.com", endpoint_id=1, url="u", reason="r") is False
    assert mail.outbox == [] and "refused" in caplog.text


# --- send again ----------------------------------------------------------------------------------------


def test_send_again_puts_a_finished_delivery_back_with_its_attempts(make_endpoint, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = []
    make_endpoint()
    emit("x")
    (row,) = deliveries()
    assert fail(claim(row.pk)).state == "failed"
    assert services.delivery_resend(delivery_id=row.pk) is True
    assert services.delivery_resend(delivery_id=row.pk) is False  # pending already
    again = claim(row.pk)
    assert again.attempt == 2
    services.delivery_record(claimed=again, status=200, error="", duration_ms=1)
    assert services.delivery_resend(delivery_id=row.pk) is True  # a succeeded one may be sent again too
    with pytest.raises(NotFound):
        services.delivery_resend(delivery_id=row.pk + 1000)
    with pytest.raises(NotFound):
        services.delivery_resend(delivery_id="1")


# --- one attempt, in-process, against a real receiver -------------------------------------------------


def test_an_attempt_posts_the_signed_event_and_records_it(make_endpoint, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    with Receiver() as receiver:
        endpoint = make_endpoint()
        receiver.route("/in", endpoint.secret)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url("/in"))
        emit("x", ordering_key="o", total="9.90")
        (row,) = deliveries()
        assert delivery.deliver(row.pk) == "succeeded"
        assert delivery.deliver(row.pk) == "skipped"
        (request,) = receiver.requests()
    assert request.verified
    assert request.webhook_id == row.event.webhook_id
    assert request.event["type"] == "test.ping" and request.event["data"] == {"total": "9.90"}
    row.refresh_from_db()
    assert (row.state, row.attempts, row.last_status, row.last_error) == (Delivery.SUCCEEDED, 1, 200, "")


def test_an_attempt_to_a_refused_address_is_recorded_as_a_failure(make_endpoint, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    make_endpoint(url="http://127.0.0.1:9/in")
    emit("x")
    (row,) = deliveries()
    assert delivery.deliver(row.pk) == "retry"
    row.refresh_from_db()
    assert row.state == Delivery.PENDING and row.last_status is None
    assert row.last_error.startswith("address refused: 127.0.0.1 resolves to 127.0.0.1 (loopback)")


def test_the_deliveries_gauge_counts_by_state(make_endpoint):
    make_endpoint()
    emit("a")
    emit("b")
    WebhookDelivery.objects.filter(pk=deliveries()[0].pk).update(state=Delivery.FAILED)
    assert services.deliveries_count_by_state() == {"pending": 1, "delivering": 0, "failed": 1}


def test_the_gauge_serves_its_last_reading_and_reads_at_most_once_an_interval():
    registry = CollectorRegistry()
    backlog = DeliveryBacklog(registry)
    assert registry.get_sample_value("stockroom_webhook_deliveries", {"state": "pending"}) is None
    assert backlog.measure_if_due(lambda: {"pending": 3, "delivering": 1, "failed": 2}, interval=60) is True
    assert backlog.measure_if_due(lambda: {"pending": 99}, interval=60) is False
    assert registry.get_sample_value("stockroom_webhook_deliveries", {"state": "pending"}) == 3
    assert registry.get_sample_value("stockroom_webhook_deliveries", {"state": "failed"}) == 2
    assert registry.get_sample_value("stockroom_webhook_deliveries_measured_timestamp_seconds") > 0
