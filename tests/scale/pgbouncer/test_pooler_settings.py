"""The settings' two shapes of a database connection: a session of its own (the default), and
behind a transaction-mode pooler (DATABASE_POOLER=pgbouncer). No server needed."""

import subprocess
import sys

import pytest

from project.settings.base import database_settings
from tests.support import ROOT, subprocess_env

POOLER_URL = "postgres://shop@pgbouncer.internal:6432/stockroom"
DIRECT_URL = "postgres://shop:Hunter2-pass@db.internal:5432/stockroom"


def test_the_default_shape_carries_the_timeouts_as_startup_options_and_prepares():
    config = database_settings(DIRECT_URL)
    assert "-c statement_timeout=" in config["OPTIONS"]["options"]
    assert config["OPTIONS"]["prepare_threshold"] == 5
    assert "POOLER" not in config and "DIRECT" not in config
    assert not config.get("DISABLE_SERVER_SIDE_CURSORS")


def test_the_pooler_shape_keeps_nothing_in_the_session_and_knows_the_direct_connection():
    config = database_settings(POOLER_URL, pooler="pgbouncer", direct_url=DIRECT_URL)
    assert "options" not in config["OPTIONS"]
    assert config["OPTIONS"]["prepare_threshold"] is None
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert (config["HOST"], config["PORT"]) == ("pgbouncer.internal", 6432)
    direct = config["DIRECT"]
    assert (direct["HOST"], direct["PORT"], direct["PASSWORD"]) == ("db.internal", 5432, "Hunter2-pass")
    assert "-c lock_timeout=" in direct["OPTIONS"]["options"]


def _settings_import(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import project.settings.base as s; print(s.DATABASES['default']['PORT'])"],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DATABASE_POOLER": "pgbouncer", "DATABASE_DIRECT_URL": ""}, "needs DATABASE_DIRECT_URL"),
        ({"DATABASE_POOLER": "pgpool", "DATABASE_DIRECT_URL": DIRECT_URL}, "expected 'pgbouncer'"),
    ],
)
def test_a_pooler_without_a_direct_url_or_of_unknown_kind_is_refused(env, needle):
    result = _settings_import(DATABASE_URL=POOLER_URL, **env)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Hunter2-pass" not in result.stderr


def test_db_direct_points_a_process_at_postgresql_itself_with_its_session_options():
    env = {"DATABASE_URL": POOLER_URL, "DATABASE_POOLER": "pgbouncer", "DATABASE_DIRECT_URL": DIRECT_URL}
    assert _settings_import(**env).stdout.strip() == "6432"
    assert _settings_import(**env, DB_DIRECT="1").stdout.strip() == "5432"
