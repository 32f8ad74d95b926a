"""What a newcomer sees when configuration is wrong, and the production profile's deploy check."""

import importlib.util
import subprocess
import sys

import psycopg
import pytest
import redis

from project.settings.dburl import redact_url
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


# --- issue 18, finding 13: safe defaults, no secrets in messages, production's own checks ----------

PRODUCTION = {"DJANGO_SETTINGS_MODULE": "project.settings.production", "ALLOWED_HOSTS": "shop.example.com"}


def run_without(names, args, **env):
    """`run` with `names` removed from the inherited environment (the test process sets DEBUG=0)."""
    environment = subprocess_env(**env)
    for name in names:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_base_profile_turns_debug_off_unless_asked():
    show = ["-c", "from project.settings import base; print(base.DEBUG)"]

    default = run_without(["DEBUG"], show)
    asked = run_without([], show, DEBUG="1")

    assert (default.stdout.strip(), asked.stdout.strip()) == ("False", "True"), default.stderr + asked.stderr


def test_production_requires_allowed_hosts_from_the_environment():
    missing = run_without(["ALLOWED_HOSTS"], ["manage.py", "check"], **PRODUCTION, SECRET_KEY=LONG_SECRET)
    empty = run(["manage.py", "check"], **PRODUCTION | {"ALLOWED_HOSTS": ""}, SECRET_KEY=LONG_SECRET)
    shown = run(
        ["-c", "from project.settings import production as p; print(p.ALLOWED_HOSTS)"],
        **PRODUCTION,
        SECRET_KEY=LONG_SECRET,
    )

    for refused in (missing, empty):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.strip().count("\n") == 0, refused.stderr
        assert "ALLOWED_HOSTS" in refused.stderr
    assert shown.stdout.strip() == "['shop.example.com']", shown.stderr


@pytest.mark.parametrize(
    "secret",
    [
        "django-insecure-" + "k8#vQ2!mZp4@xL7^wN1&cR5*tY9(bH3)jD6_fG0+sA",  # Django's generated dev keys
        "ab" * 40,  # long, but fewer than 5 distinct characters
        "x7Kq2" * 9 + "z",  # 46 characters
        "dev-only-insecure-secret-key-change-me-0123456789abcdef",  # the development default
    ],
)
def test_production_refuses_secret_keys_that_djangos_deploy_check_warns_about(secret):
    result = run(["manage.py", "check"], **PRODUCTION, SECRET_KEY=secret)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "SECRET_KEY" in result.stderr
    assert secret not in result.stderr


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("DATABASE_URL", "mysql://root:Hunter2-pass@db.example.com/shop"),
        ("DATABASE_URL", "postgres://shop:Hunter2-pass@db.example.com:5432"),
        ("DATABASE_URL", "postgres://shop:Hunter2-pass@db.example.com:port/shop"),
        ("DATABASE_URL", "postgres://shop@db.example.com:5432?sslmode=require&password=Hunter2-pass"),
        ("REDIS_URL", "http://:Hunter2-pass@cache.example.com:6379/0"),
    ],
)
def test_a_malformed_url_is_reported_without_its_password(name, url):
    result = run(["manage.py", "check"], **{name: url})

    assert result.returncode == 2, result.stdout + result.stderr
    assert name in result.stderr
    assert "Hunter2-pass" not in result.stderr
    assert "***" in result.stderr


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL"])
def test_services_script_reports_an_unreachable_server_without_its_password(tmp_path, name):
    port = closed_port()
    url = {
        "DATABASE_URL": f"postgres://postgres:Hunter2-pass@127.0.0.1:{port}/stockroom",
        "REDIS_URL": f"redis://:Hunter2-pass@127.0.0.1:{port}/0",
    }[name]

    result = run(["bin/services.py", "--var-dir", str(tmp_path)], **{name: url})

    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{name}='{url.replace('Hunter2-pass', '***')}'" in result.stderr
    assert "Hunter2-pass" not in result.stderr


def test_the_services_script_redacts_urls_exactly_as_the_settings_do():
    spec = importlib.util.spec_from_file_location("stockroom_services_script", ROOT / "bin" / "services.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    urls = [
        "postgres://postgres@127.0.0.1:5432/stockroom",
        "postgres://shop:p%40ss:w0rd@db.example.com:5432/shop",
        "postgres://shop:p@ss@db.example.com/shop",
        "postgres://%2Fvar%2Frun%2Fpostgresql/shop?user=shop&password=s3cret&sslmode=require",
        "redis://:s3cret@cache.example.com:6379/0",
        "rediss://default:s3cret@cache.example.com:6380/1?ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=0&Password=s3cret",
    ]

    redacted = [redact_url(url) for url in urls]

    assert [script.redact_url(url) for url in urls] == redacted
    assert urls[0] == redacted[0]
    assert not any(secret in url for url in redacted[1:] for secret in ("s3cret", "p%40ss", "p@ss", "w0rd"))
