"""Run servers that refuse root (PostgreSQL, PgBouncer) as the `postgres` OS user.

CI runs as root and PostgreSQL will not start as root, so the tests' own servers run as the
`postgres` user (`runuser`) in a folder that user owns: pytest's temporary folders are private to
root. Under any other user the commands run as that user, in a folder it owns anyway.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_server_user(command: list[str]) -> list[str]:
    """`command`, run as the postgres OS user when we are root."""
    if running_as_root():
        return ["runuser", "-u", SERVER_USER, "--", *command]
    return command


def owned_dir(prefix: str) -> Path:
    """A new empty folder the server user can write (and only it, as PostgreSQL requires)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if running_as_root():
        user = pwd.getpwnam(SERVER_USER)
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def postgres_bin(name: str) -> str:
    """The path of one of the machine's PostgreSQL server programs (initdb, pg_ctl, pg_basebackup)."""
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    return str(Path(bindir) / name)


def write_as_server_user(path: Path, text: str) -> None:
    """Write a file the server user will own (a config file in its folder)."""
    path.write_text(text)
    if running_as_root():
        user = pwd.getpwnam(SERVER_USER)
        os.chown(path, user.pw_uid, user.pw_gid)
