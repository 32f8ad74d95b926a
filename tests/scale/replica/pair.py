"""A PostgreSQL primary and its hot standby, started with the machine's binaries for the tests.

Both run as the postgres OS user (tests.scale.postgres_user) in a folder it owns, on free ports,
with settings that make them small and quick: no fsync, small buffers, the standby reporting its
position every 100 ms. The machine's own server (5432) is never touched. `pause_replay()` holds
the standby at its current position while the primary goes on, so lag exists on demand.
"""

import contextlib
import subprocess
from pathlib import Path

import psycopg

from tests.scale.postgres_user import as_server_user, owned_dir, postgres_bin, remove_dir, write_as_server_user
from tests.support import free_port, wait_for

SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
wal_level = replica
max_wal_senders = 4
hot_standby = on
wal_receiver_status_interval = 1s
hot_standby_feedback = on
max_standby_streaming_delay = -1
logging_collector = off
"""


class Pair:
    """A running primary and standby; `database` is created on the primary (and so on the standby)."""

    def __init__(self, *, database: str = "stockroom"):
        self.database = database
        self.root = owned_dir("stockroom-pair-")
        self.primary_dir = self.root / "primary"
        self.standby_dir = self.root / "standby"
        self.primary_port = free_port()
        self.standby_port = free_port()
        self._started: list[Path] = []

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "Pair":
        self._run(
            postgres_bin("initdb"),
            "-D",
            str(self.primary_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C",
        )
        self._configure(self.primary_dir, self.primary_port)
        write_as_server_user(
            self.primary_dir / "pg_hba.conf",
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
        self._pg_ctl(self.primary_dir, "start")
        with self.primary() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._run(
            postgres_bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(self.standby_dir),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "-c",
            "fast",
        )
        self._configure(self.standby_dir, self.standby_port)
        self.start_standby()
        return self

    def start_standby(self) -> None:
        self._pg_ctl(self.standby_dir, "start")
        wait_for(self._standby_answers, timeout=30, interval=0.05, what="the standby to accept connections")

    def stop_standby(self) -> None:
        self._pg_ctl(self.standby_dir, "stop", "-m", "fast")

    def stop(self) -> None:
        for data_dir in reversed(self._started):
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl(data_dir, "stop", "-m", "immediate")
        remove_dir(self.root)

    # --- connections ------------------------------------------------------------------------------

    def url(self, port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{self.database}"

    @property
    def primary_url(self) -> str:
        return self.url(self.primary_port)

    @property
    def standby_url(self) -> str:
        return self.url(self.standby_port)

    def primary(self, database: str = "postgres") -> psycopg.Connection:
        return self._connect(self.primary_port, database)

    def standby(self, database: str = "postgres") -> psycopg.Connection:
        return self._connect(self.standby_port, database)

    @staticmethod
    def _connect(port: int, database: str) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname=database, autocommit=True, connect_timeout=5
        )

    # --- replay -----------------------------------------------------------------------------------

    def pause_replay(self) -> None:
        """Hold the standby where it is: what the primary commits from now on is not on it."""
        with self.standby() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            wait_for(
                lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
                timeout=10,
                interval=0.02,
                what="replay to pause",
            )

    def resume_replay(self) -> None:
        with self.standby() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    def wait_caught_up(self, timeout: float = 10) -> None:
        """Until the standby has replayed everything the primary had written when this was called."""
        with self.primary() as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with self.standby() as conn:
            wait_for(
                lambda: conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]).fetchone()[0],
                timeout=timeout,
                interval=0.02,
                what=f"the standby to replay up to {target}",
            )

    # --- internals --------------------------------------------------------------------------------

    def _standby_answers(self) -> bool:
        try:
            with self.standby() as conn:
                return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.OperationalError:
            return False

    def _configure(self, data_dir: Path, port: int) -> None:
        conf = data_dir / "postgresql.conf"
        extra = SERVER_SETTINGS.format(port=port, sockets=self.root)
        # Appended as the server user (the file is theirs); later lines win over initdb's.
        self._run("sh", "-c", f"cat >> '{conf}' <<'EOF_CONF'\n{extra}\nEOF_CONF")

    def _pg_ctl(self, data_dir: Path, action: str, *args: str) -> None:
        self._run(
            postgres_bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(data_dir.parent / f"{data_dir.name}.log"),
            "-w",
            "-t",
            "30",
            action,
            *args,
        )
        if action == "start" and data_dir not in self._started:
            self._started.append(data_dir)

    def _run(self, *command: str) -> None:
        subprocess.run(as_server_user(list(command)), check=True, capture_output=True, text=True, timeout=120)
