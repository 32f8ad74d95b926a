"""What a newcomer sees when configuration is wrong, and the production profile's deploy check."""

import subprocess
import sys

import psycopg
import pytest
import redis

from tests.support import ROOT, closed_port, subprocess_env

pytestmark = pytest.mark.slow

LONG_SECRET = "p" * 20 + "-production-secret-key-for-the-deploy-check-only-0123456789"


def run(args, **env):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=120
    )


def test_production_profile_passes_the_deploy_check_with_nothing_silenced():
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_SETTINGS_MODULE="project.settings.production",
        SECRET_KEY=LONG_SECRET,
        ALLOWED_HOSTS="shop.example.com",
        METRICS_TOKEN="m" * 40,  # /metrics needs a way in (stockroom.E001)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_refuses_the_development_secret():
    result = run(["manage.py", "check"], DJANGO_SETTINGS_MODULE="project.settings.production", SECRET_KEY="")

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://root@localhost/shop", "not a PostgreSQL URL"),
        ("postgres://postgres@127.0.0.1:5432", "names no database"),
    ],
)
def test_a_malformed_database_url_is_one_line_naming_the_variable(url, needle):
    result = run(["manage.py", "check"], DATABASE_URL=url)

    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr
    assert needle in result.stderr


def test_services_script_names_an_unreachable_database_in_one_line(tmp_path):
    port = closed_port()
    url = f"postgres://postgres@127.0.0.1:{port}/stockroom"

    result = run(["bin/services.py", "--var-dir", str(tmp_path)], DATABASE_URL=url)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"DATABASE_URL={url!r}" in result.stderr
    assert "cannot connect" in result.stderr


def test_services_script_names_an_unreachable_redis_in_one_line(tmp_path):
    url = f"redis://127.0.0.1:{closed_port()}/0"

    result = run(["bin/services.py", "--var-dir", str(tmp_path)], REDIS_URL=url)

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"REDIS_URL={url!r}" in result.stderr


def test_forced_embedded_fallback_starts_postgres_and_redis_from_the_wheels(tmp_path):
    env_file = tmp_path / "services.env"
    try:
        result = run(["bin/services.py", "--embedded", "--var-dir", str(tmp_path), "--write", str(env_file)])
        assert result.returncode == 0, result.stderr
        urls = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert "127.0.0.1:5432" not in urls["DATABASE_URL"]
        assert ":6379" not in urls["REDIS_URL"]

        with psycopg.connect(urls["DATABASE_URL"], connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("stockroom",)
        client = redis.Redis.from_url(urls["REDIS_URL"], socket_timeout=2)
        assert client.ping()
        client.close()

        migrate = run(
            ["manage.py", "migrate", "--noinput", "-v0"], **urls, DJANGO_SETTINGS_MODULE="project.settings.base"
        )
        assert migrate.returncode == 0, migrate.stderr
    finally:
        run(["bin/services.py", "--stop", "--var-dir", str(tmp_path)])


def test_production_without_a_metrics_token_or_loopback_refuses_to_start():
    result = run(
        ["manage.py", "check"],
        DJANGO_SETTINGS_MODULE="project.settings.production",
        SECRET_KEY=LONG_SECRET,
        ALLOWED_HOSTS="shop.example.com",
        METRICS_TOKEN="",
        METRICS_ALLOW_LOOPBACK="0",
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "stockroom.E001" in result.stderr
    assert "METRICS_TOKEN" in result.stderr


def test_production_with_a_metrics_token_passes_the_deploy_check_with_no_warning():
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_SETTINGS_MODULE="project.settings.production",
        SECRET_KEY=LONG_SECRET,
        ALLOWED_HOSTS="shop.example.com",
        METRICS_TOKEN="m" * 40,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout

