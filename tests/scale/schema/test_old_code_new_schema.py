"""The release before the newest migrations keeps serving while they are applied: no failed request.

A deploy migrates first and replaces the code afterwards, so the running code meets the new schema.
The previous release is the parent of the newest commit that added a migration (or HEAD, when the
working tree has migrations not committed yet), extracted with `git archive` into a temporary
folder (no worktree metadata in .git). It migrates a database of its own, seeds it through its own
services and serves it with its own gunicorn (same .venv; the folder comes first on sys.path, before
the editable install of this checkout), while this checkout's `manage.py migrate` applies the rest.
"""

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.invariants import breaches_in
from tests.support import ROOT, free_port, stop_process, subprocess_env, wait_for

pytestmark = pytest.mark.slow

SEED = """
import json
from decimal import Decimal
from inventory.services import product_create, stock_receive, warehouse_create
from users.services import api_key_create, user_ensure

warehouse_create(code="OLD1", name="Old release")
skus = [f"OLD-{n:03d}" for n in range(20)]
for sku in skus:
    product_create(sku=sku, name=sku, price=Decimal("5.00"))
    stock_receive(sku=sku, warehouse_code="OLD1", quantity=100000)
shopper = user_ensure(email="old-release@example.com", password="old-release-password")
print(json.dumps({"key": api_key_create(user=shopper)[1], "skus": skus}))
"""
ADDRESS = {"name": "Ada Shopper", "line1": "1 Release Road", "city": "Lyon", "postal_code": "69001", "country": "FR"}
# Requests a shopper may get that are not failures (out of stock, a key replayed...); 5xx never is.
ANSWERS_THAT_ARE_NOT_FAILURES = {200, 201, 409}


def git(*args: str) -> str:
    result = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed (this test needs the repository's history): {result.stderr}")
    return result.stdout.strip()


def previous_release() -> str:
    """The commit whose code runs while the newest migrations are applied."""
    if git("rev-parse", "--is-shallow-repository") == "true":
        pytest.fail("shallow clone: this test needs the commit before the newest migrations (git fetch --unshallow)")
    if git("status", "--porcelain", "--", "*/migrations/0*.py", "*/migrations/sql/*"):
        return git("rev-parse", "HEAD")  # this working tree's migrations are the newest
    newest = git("log", "-1", "--diff-filter=A", "--format=%H", "--", "*/migrations/0*.py")
    if not newest:
        pytest.fail("no commit in the history added a migration")
    return git("rev-parse", "--verify", f"{newest}^{{commit}}^")


def extract(commit: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(cwd: Path, env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args} in {cwd}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def old_database(settings):
    db = settings.DATABASES["default"]
    server = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    name = f"test_stockroom_oldcode{settings.TEST_RUN_ID}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def shop(base: str, key: str, skus: list[str], stop: threading.Event, answers: list, worker: int) -> None:
    """One shopper: an order, a product read, the catalogue, again and again until told to stop."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        n = 0
        while not stop.is_set():
            sku = skus[(worker * 7 + n) % len(skus)]
            n += 1
            requests = [
                (
                    "POST",
                    "/api/v1/orders",
                    {"json": {"lines": [{"sku": sku, "quantity": 1}], "shipping_address": ADDRESS}},
                ),
                ("GET", f"/api/v1/products/{sku}", {}),
                ("GET", "/api/v1/products", {}),
            ]
            for method, path, extra in requests:
                request_headers = dict(headers)
                if method == "POST":
                    request_headers["Idempotency-Key"] = str(uuid.uuid4())
                try:
                    response = client.request(method, path, headers=request_headers, **extra)
                    answers.append((time.monotonic(), method, path, response.status_code, response.text[:300]))
                except httpx.HTTPError as exc:
                    answers.append((time.monotonic(), method, path, None, repr(exc)))
            stop.wait(0.05)  # a shopper's pace: the point is overlap with the migration, not load


def test_the_previous_release_serves_orders_while_the_newest_migrations_are_applied(tmp_path, old_database):
    old_tree = extract(previous_release(), tmp_path / "previous-release")
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="project.settings.test",
        DATABASE_URL=old_database,
        PYTHONPATH=str(old_tree),  # before the .venv's editable install of this checkout
        LOG_LEVEL="WARNING",
    )
    imported = run(old_tree, env, "-c", "import inventory, orders, project; print(project.__file__)").strip()
    assert imported == str(old_tree / "project" / "__init__.py"), f"the old code imports {imported}"

    run(old_tree, env, "manage.py", "migrate", "--noinput", "-v0")
    seeded = json.loads(run(old_tree, env, "manage.py", "shell", "-c", SEED).strip().splitlines()[-1])
    new_env = subprocess_env(DJANGO_SETTINGS_MODULE="project.settings.test", DATABASE_URL=old_database)
    plan = run(ROOT, new_env, "manage.py", "migrate", "--plan")
    assert "Planned operations:" in plan and "No planned migration operations" not in plan, plan

    port = free_port()
    log = tmp_path / "old-gunicorn.log"
    with open(log, "wb") as out:
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=old_tree,
            env={
                **env,
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "WEB_CONCURRENCY": "1",
                "GUNICORN_THREADS": "4",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    answers: list = []
    shoppers = [
        threading.Thread(target=shop, args=(base, seeded["key"], seeded["skus"], stop, answers, n)) for n in range(3)
    ]
    try:

        def up():
            assert gunicorn.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, what="the previous release's gunicorn to answer")
        for thread in shoppers:
            thread.start()
        wait_for(lambda: len(answers) >= 12, timeout=30, what="the shoppers to get going")
        migrate_started = time.monotonic()
        migrated = run(ROOT, new_env, "manage.py", "migrate", "--noinput")
        migrate_ended = time.monotonic()
        # Go on for a while against the new schema, then stop.
        wait_for(lambda: answers[-1][0] > migrate_ended + 2, timeout=30, what="requests after the migration")
    finally:
        stop.set()
        for thread in shoppers:
            thread.join(timeout=30)
        stop_process(gunicorn, timeout=20)

    assert "Applying" in migrated, migrated
    failures = [answer for answer in answers if answer[3] not in ANSWERS_THAT_ARE_NOT_FAILURES]
    assert failures == [], failures[:10]
    during = [answer for answer in answers if migrate_started <= answer[0] <= migrate_ended]
    after = [answer for answer in answers if answer[0] > migrate_ended]
    placed = sum(1 for answer in answers if answer[1] == "POST" and answer[3] == 201)
    assert during and after and placed, (len(during), len(after), placed)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    with psycopg.connect(old_database) as conn:
        assert conn.execute("SELECT count(*) FROM orders_order").fetchone() == (placed,)
    assert breaches_in(old_database) == 0
