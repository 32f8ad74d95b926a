from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from project.celery import app
from project.observability.logs import request_id_var
from tests.support import wait_for
from users.models import ApiKey
from users.services import api_key_create
from users.tasks import purge_api_keys


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (solo pool, in a thread) on the test broker DB and the test queue."""
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING") as worker:
        yield worker


def test_purge_task_runs_on_a_real_worker_and_carries_the_request_id(celery_worker, customer, json_log):
    old, _ = api_key_create(user=customer)
    fresh, _ = api_key_create(user=customer)
    ApiKey.objects.filter(pk=old.pk).update(revoked_at=timezone.now() - timedelta(days=40))
    token = request_id_var.set("purge-req-1")
    try:
        purge_api_keys.delay(30)
    finally:
        request_id_var.reset(token)

    wait_for(lambda: not ApiKey.objects.filter(pk=old.pk).exists(), timeout=20, what="the worker to purge the key")
    assert ApiKey.objects.filter(pk=fresh.pk).exists()
    line = wait_for(
        lambda: next((line for line in json_log() if line["message"] == "purged 1 api keys"), None),
        timeout=5,
        what="the task's log line",
    )
    assert line["request_id"] == "purge-req-1"
    assert line["purged"] == 1


def test_task_refuses_a_bad_argument_without_deleting_anything(celery_worker, customer, caplog):
    api_key, _ = api_key_create(user=customer)
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now() - timedelta(days=400))
    caplog.set_level("ERROR", logger="stockroom.users")

    purge_api_keys.delay("everything")

    wait_for(
        lambda: any("refused" in r.getMessage() for r in caplog.records), timeout=20, what="the refusal to be logged"
    )
    assert ApiKey.objects.filter(pk=api_key.pk).exists()
