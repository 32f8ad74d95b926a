"""A real PgBouncer 1.18 (Debian's /usr/sbin/pgbouncer) for the tests, started from the sample
config ops/pgbouncer/pgbouncer.ini with only its addresses, files and authentication changed.

It runs as the postgres OS user (tests/scale/postgres_user.py) in a folder that user owns, on a
free port, in front of the machine's PostgreSQL (which trusts local connections): `auth_type =
trust` with the one user in its auth_file, and that user on its admin console.
"""

import contextlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.scale.postgres_user import as_server_user, owned_dir, remove_dir, write_as_server_user
from tests.support import ROOT, free_port, stop_process, wait_for

PGBOUNCER = "/usr/sbin/pgbouncer"
SAMPLE_CONFIG = ROOT / "ops" / "pgbouncer" / "pgbouncer.ini"
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_SETTING = re.compile(r"^\s*(?P<key>[A-Za-z_*][\w*.-]*)\s*=")


def render_config(template: str, *, databases: dict[str, str], settings: dict[str, str]) -> str:
    """`template` with its [databases] entries replaced by `databases`, and each of `settings` set
    in [pgbouncer] (in place where the template has it, else at the section's end)."""
    out: list[str] = []
    section = None
    pending = dict(settings)

    def close_section():
        if section == "pgbouncer":
            out.extend(f"{key} = {value}" for key, value in pending.items())
            pending.clear()

    for line in template.splitlines():
        header = _SECTION.match(line)
        if header:
            close_section()
            section = header["name"].strip()
            out.append(line)
            if section == "databases":
                out.extend(f"{name} = {entry}" for name, entry in databases.items())
            continue
        setting = _SETTING.match(line)
        if setting and section == "databases":
            continue
        if setting and section == "pgbouncer" and setting["key"] in settings:
            key = setting["key"]
            if key in pending:
                out.append(f"{key} = {pending.pop(key)}")
            continue
        out.append(line)
    close_section()
    return "\n".join(out) + "\n"


@dataclass
class PgBouncer:
    port: int
    folder: Path
    user: str

    def url(self, database: str) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict]:
        """A command on PgBouncer's admin console (the `pgbouncer` database), rows as dicts."""
        address = {"host": "127.0.0.1", "port": self.port, "user": self.user, "dbname": "pgbouncer"}
        with psycopg.connect(**address, autocommit=True, prepare_threshold=None) as console:
            cursor = console.cursor()
            cursor.execute(command)
            if cursor.description is None:
                return []
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "pgbouncer.log").read_text()
        return ""


@contextlib.contextmanager
def running_pgbouncer(*, databases: dict[str, str], user: str, **settings: str) -> Iterator[PgBouncer]:
    """PgBouncer from the sample config, serving `databases`, until the block ends."""
    folder = owned_dir("stockroom-pgbouncer-")
    port = free_port()
    write_as_server_user(folder / "userlist.txt", f'"{user}" ""\n')
    config = render_config(
        SAMPLE_CONFIG.read_text(),
        databases=databases,
        settings={
            "listen_addr": "127.0.0.1",
            "listen_port": str(port),
            "logfile": str(folder / "pgbouncer.log"),
            "pidfile": str(folder / "pgbouncer.pid"),
            "auth_type": "trust",
            "auth_file": str(folder / "userlist.txt"),
            "admin_users": user,
            "stats_users": user,
            **settings,
        },
    )
    write_as_server_user(folder / "pgbouncer.ini", config)
    # Foreground (no -d): the process is ours to stop; runuser passes SIGTERM on to it.
    process = subprocess.Popen(
        as_server_user([PGBOUNCER, str(folder / "pgbouncer.ini")]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = PgBouncer(port=port, folder=folder, user=user)
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"pgbouncer exited: {process.stderr.read().decode()} {server.log()}")
            try:
                server.admin("SHOW VERSION")
            except psycopg.OperationalError:
                return False
            return True

        wait_for(listening, timeout=15, what="pgbouncer to listen")
        yield server
    finally:
        stop_process(process)
        remove_dir(folder)
