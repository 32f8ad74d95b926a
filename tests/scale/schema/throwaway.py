"""Throwaway Django apps, written into a test's temporary folder, for the schema-change tests.

A test needs migrations that are not the project's (a column drop the linter must refuse, an ALTER
that meets a held lock): they live in an app package under tmp_path with a settings module that adds
it to the test settings, and manage.py runs in a subprocess with that folder on PYTHONPATH. Nothing
is added to the project's own INSTALLED_APPS.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import ROOT, subprocess_env

CREATE_ITEM = """
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(primary_key=True)),
                ("name", models.CharField(max_length=40)),
                ("note", models.TextField(default="")),
            ],
        ),
    ]
"""


def migration(app: str, previous: str, operations: list[str], *, imports: str = "", atomic: bool = True) -> str:
    """The text of a migration of `app` after `previous` with these operations (one Python line each)."""
    body = "".join(f"        {operation},\n" for operation in operations)
    return (
        f"from django.db import migrations, models\n{imports}\n\n\n"
        "class Migration(migrations.Migration):\n"
        f"    atomic = {atomic}\n"
        f"    dependencies = [({app!r}, {previous!r})]\n"
        f"    operations = [\n{body}    ]\n"
    )


def write_app(root: Path, app: str, migrations: dict[str, str], *, settings: str = "") -> str:
    """An app `app` under `root` with these migrations (name -> text), and a settings module that
    installs it on top of the test settings plus `settings` (Python). Returns the settings module."""
    package = root / app
    (package / "migrations").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "__init__.py").write_text("")
    for name, text in migrations.items():
        (package / "migrations" / f"{name}.py").write_text(text)
    module = f"{app}_settings"
    (root / f"{module}.py").write_text(
        "from project.settings.test import *  # noqa: F403\n\n"
        f"INSTALLED_APPS = [*INSTALLED_APPS, {app!r}]  # noqa: F405\n" + textwrap.dedent(settings)
    )
    return module


def manage(root: Path, settings_module: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py *args` of the current code with the throwaway app's settings; output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=subprocess_env(PYTHONPATH=str(root), DJANGO_SETTINGS_MODULE=settings_module, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage_popen(root: Path, settings_module: str, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """`manage.py *args` in the background, stdout and stderr into `log` (read while it runs)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=subprocess_env(PYTHONPATH=str(root), DJANGO_SETTINGS_MODULE=settings_module, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
