import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from inventory.models import Product, StockMovement, Warehouse
from inventory.selectors import stock_ledger_breaches
from project.demo import load_demo_data
from project.schedules import SCHEDULES
from tests.support import ROOT, closed_port, subprocess_env
from users.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_demo_data_is_idempotent_and_breaks_no_invariant():
    list(load_demo_data())
    counts = (Product.objects.count(), Warehouse.objects.count(), StockMovement.objects.count(), User.objects.count())

    list(load_demo_data())

    assert counts[0] == 300
    assert (
        Product.objects.count(),
        Warehouse.objects.count(),
        StockMovement.objects.count(),
        User.objects.count(),
    ) == counts
    assert stock_ledger_breaches() == []
    assert User.objects.get(email="staff@example.com").is_staff


def test_demo_data_is_refused_outside_development_unless_forced(settings):
    settings.DEMO_DATA_ALLOWED = False  # what project.settings.production says

    with pytest.raises(CommandError, match="--force"):
        call_command("load_demo_data", stdout=io.StringIO())
    assert not User.objects.filter(email="staff@example.com").exists()

    call_command("load_demo_data", "--force", stdout=io.StringIO())
    assert User.objects.get(email="staff@example.com").is_superuser


def test_the_production_profile_refuses_demo_data_before_touching_the_database():
    result = subprocess.run(
        [sys.executable, "manage.py", "load_demo_data"],
        cwd=ROOT,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="project.settings.production",
            SECRET_KEY="p" * 20 + "-production-secret-key-for-the-demo-check-only-0123456789",
            ALLOWED_HOSTS="shop.example.com",
            METRICS_TOKEN="m" * 40,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/stockroom",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "--force" in result.stderr
    assert "Traceback" not in result.stderr


def test_setup_schedules_creates_the_periodic_jobs_without_demo_data():
    out = io.StringIO()

    call_command("setup_schedules", stdout=out)

    assert set(PeriodicTask.objects.values_list("name", flat=True)) == set(SCHEDULES)
    assert not User.objects.exists()
    assert "clear expired sessions" in out.getvalue()


def test_demo_data_creates_no_schedules_they_are_setup_schedules_work():
    list(load_demo_data())

    assert not PeriodicTask.objects.filter(name__in=SCHEDULES).exists()


def test_make_run_creates_the_schedules_before_the_demo_data():
    makefile = (ROOT / "Makefile").read_text()
    prepare = makefile[makefile.index("\nprepare:") : makefile.index("\nrun:")]

    assert "\nrun: prepare\n" in makefile and "\ntwo-nodes: prepare " in makefile
    assert prepare.index("manage.py setup_schedules") < prepare.index("manage.py load_demo_data")
