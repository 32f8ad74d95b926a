"""Tests that mean something only through PgBouncer: test_pgbouncer.py runs this file (not named
test_*, so the suite never collects it on its own) in a pytest of its own with DATABASE_URL at
PgBouncer, DATABASE_POOLER=pgbouncer and DATABASE_DIRECT_URL at PostgreSQL, beside order tests."""

import pytest
from django.db import connection, transaction

from project.celery import app
from project.db.pooler import configured_limits, session_limits
from project.outbox.models import OutboxMessage
from project.outbox.services import outbox_enqueue
from tests.project.outbox.support import RelayThread
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_this_run_goes_through_pgbouncer_with_the_limits_in_force():
    settings_dict = connection.settings_dict
    assert settings_dict["POOLER"] == "pgbouncer"
    assert "options" not in settings_dict["OPTIONS"]
    direct = settings_dict["DIRECT"]
    assert (settings_dict["HOST"], settings_dict["PORT"]) != (direct["HOST"], direct["PORT"])
    connection.ensure_connection()
    assert session_limits(connection.connection) == configured_limits()
    assert connection.connection.prepare_threshold is None


def test_the_relay_listens_on_postgresql_itself_and_wakes_on_notify(settings):
    """With a poll of a minute, only the NOTIFY at commit can wake the relay within seconds; it
    reaches a LISTEN on the direct connection (through PgBouncer it would be lost)."""
    settings.OUTBOX_NOTIFY_INTERVAL_MS = 0
    with RelayThread(poll_seconds=60) as running:
        wait_for(lambda: running.relay.rounds >= 1, timeout=10, what="the relay's first round")
        listener = running.relay._listener
        assert listener is not None
        assert str(listener.info.port) == str(connection.settings_dict["DIRECT"]["PORT"])
        assert str(listener.info.port) != str(connection.settings_dict["PORT"])
        with transaction.atomic():
            message_id = outbox_enqueue(task="tests.pgbouncer.wake", kwargs={"word": "up"})
        wait_for(
            lambda: OutboxMessage.objects.get(pk=message_id).state == OutboxMessage.State.SENT,
            timeout=10,
            what="the relay to publish after the NOTIFY",
        )
        assert running.relay.rounds <= 3  # woken by the NOTIFY, not by polling every round
    assert running.error is None
    app.control.purge()  # nothing consumes this run's queue
