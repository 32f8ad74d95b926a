"""One writer of outbox rows: outbox_write (project/migrations/sql/0003_outbox_write.sql). The
Python writer (outbox_enqueue, outbox_enqueue_many) and a direct call, as the SQL paths make it,
write the same rows for the same inputs, with the INSERT and the NOTIFY in one statement."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from project.observability.logs import request_id_var
from project.outbox.models import OutboxMessage
from project.outbox.services import outbox_enqueue, outbox_enqueue_many

pytestmark = pytest.mark.django_db

COLUMNS = (
    "task", "args", "kwargs", "request_id", "state", "attempts", "last_error", "sent_at", "done_at", "claimed_by",
    "claimed_until",
)  # fmt: skip


def outbox_write(task, args, kwargs, request_id, channel) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT outbox_write(%s, %s::jsonb[], %s::jsonb[], %s, %s)",
            [task, None if args is None else [json.dumps(a) for a in args], [json.dumps(k) for k in kwargs],
             request_id, channel],
        )  # fmt: skip
        return cursor.fetchone()[0]


def rows(ids) -> list[tuple]:
    """Every column but the id and the two times, which the database's statement clock sets
    (column defaults): the same for both writers, not the same instant."""
    found = {row[0]: row[1:] for row in OutboxMessage.objects.filter(pk__in=ids).values_list("pk", *COLUMNS)}
    stamps = OutboxMessage.objects.filter(pk__in=ids).values_list("created_at", "next_attempt_at")
    assert all(created is not None and created == due for created, due in stamps)
    return [found[pk] for pk in ids]


@pytest.fixture
def request_id():
    token = request_id_var.set("req-42")
    yield "req-42"
    request_id_var.reset(token)


def test_one_message_is_written_alike_by_python_and_sql(request_id, settings):
    settings.OUTBOX_NOTIFY_INTERVAL_MS = 0  # this one notifies
    with CaptureQueriesContext(connection) as queries:
        python_id = outbox_enqueue(task="tests.outbox.record", kwargs={"word": "é"}, args=[1, "two"])
    sql_ids = outbox_write("tests.outbox.record", [[1, "two"]], [{"word": "é"}], request_id, None)

    assert len(queries) == 1  # one round trip: the INSERT and the NOTIFY together
    assert rows([python_id]) == rows(sql_ids)
    assert rows(sql_ids)[0][:7] == ("tests.outbox.record", [1, "two"], {"word": "é"}, "req-42", "pending", 0, "")


def test_many_messages_are_written_alike_by_python_and_sql(request_id):
    kwargs = [{"order_id": n, "kind": "expired"} for n in (3, 1, 2)]
    first = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    assert outbox_enqueue_many(task="orders.send_order_email", kwargs_list=kwargs) == 3
    python_ids = list(OutboxMessage.objects.filter(pk__gt=first).order_by("pk").values_list("pk", flat=True))
    sql_ids = outbox_write("orders.send_order_email", None, kwargs, request_id, None)

    assert rows(python_ids) == rows(sql_ids)
    assert [row[2] for row in rows(sql_ids)] == kwargs  # in the order given
    assert [row[1] for row in rows(sql_ids)] == [[], [], []]
    assert outbox_enqueue_many(task="orders.send_order_email", kwargs_list=[]) == 0
    assert outbox_write("orders.send_order_email", None, [], request_id, "stockroom_outbox") == []
