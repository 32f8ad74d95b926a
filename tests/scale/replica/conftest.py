"""A primary and hot standby of our own (pair.py), the shop migrated and seeded on the primary, and
one gunicorn serving it with the standby as its replica. Started once for the module: about 8 s."""

import json
import os
import pickle
import subprocess
import sys

import httpx
import pytest
import redis
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.scale.replica.pair import Pair
from tests.support import ROOT, gunicorn_server, subprocess_env

# Short enough for a test to wait past it, long enough that a busy host stays within it meanwhile.
MAX_LAG_SECONDS = 3.0
# Each web process keeps availability this long: far beyond any test, so a reused value is seen.
AVAILABILITY_MAX_AGE_MS = 60_000
NODE_RUN_ID = f"{os.environ.get('TEST_RUN_ID', '')}replica"


@pytest.fixture(scope="module")
def pair():
    started = Pair()
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def shop(pair):
    """Keys and session cookies of: shopper, other_shopper, staff, other_staff."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scale" / "replica" / "seed.py")],
        cwd=ROOT,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="project.settings.test",
            DATABASE_URL=pair.primary_url,
            DB_POOL="0",
            TEST_RUN_ID=NODE_RUN_ID,
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pair.wait_caught_up()
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def node(pair, shop, tmp_path_factory):
    """The base URL of a gunicorn whose catalogue reads may go to the standby."""
    with gunicorn_server(
        tmp_path_factory.mktemp("replica-node"),
        DATABASE_URL=pair.primary_url,
        REPLICA_DATABASE_URL=pair.standby_url,
        TEST_RUN_ID=NODE_RUN_ID,
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
        DB_POOL_MIN_SIZE="1",
        DB_POOL_MAX_SIZE="8",
        REPLICA_MAX_LAG_SECONDS=str(MAX_LAG_SECONDS),
        REPLICA_CHECK_INTERVAL_MS="50",
        CATALOGUE_AVAILABILITY_MAX_AGE_MS=str(AVAILABILITY_MAX_AGE_MS),
        CIRCUIT_COOLDOWN_SECONDS="1",
    ) as base:
        yield base


@pytest.fixture
def replica_paused(pair, node):
    """The standby caught up, then held there for the test."""
    pair.resume_replay()
    pair.wait_caught_up()
    pair.pause_replay()
    try:
        yield pair
    finally:
        pair.resume_replay()
        pair.wait_caught_up()


def bearer(shop, who: str) -> dict:
    return {"Authorization": f"Bearer {shop[who]['key']}"}


def session(shop, who: str) -> dict:
    return {"sessionid": shop[who]["session"]}


def skipped(base: str) -> dict[str, float]:
    """stockroom_replica_skipped_total by reason, as the node's /metrics shows it."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name == "stockroom_replica_skipped":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["reason"]] = sample.value
    return counts


def cached(key: str):
    """The node's cache entry under `key` (django-redis' key and pickle format), or None."""
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    try:
        raw = client.get(f"stockroom-test{NODE_RUN_ID}:1:{key}")
    finally:
        client.close()
    return None if raw is None else pickle.loads(raw)  # noqa: S301 - our own test cache


def standby_value(pair, sql: str, params=()):
    """What the standby itself holds (replay paused: the state before the test's writes)."""
    with pair.standby(pair.database) as conn:
        return conn.execute(sql, params).fetchone()[0]
