"""Demo data for `make run`, loaded through the services and safe to load twice.

The demo staff user is a superuser with a published password, so only the development profiles
load it (`DEMO_DATA_ALLOWED`: on in base and test, off in production) unless forced. The periodic
jobs are not demo data: `manage.py setup_schedules` creates them (`make run` calls it, and so does a
deployment).
"""

from collections.abc import Iterator

from django.conf import settings

from inventory.demo import load_demo_inventory
from inventory.selectors import stock_ledger_breaches
from users.services import user_ensure

DEMO_STAFF_EMAIL = "staff@example.com"
DEMO_CUSTOMER_EMAIL = "shopper@example.com"
DEMO_PASSWORD = "stockroom-demo"  # noqa: S105 - the published demo login, development only


class DemoDataRefused(Exception):
    """Demo data asked for in a profile that does not allow it, without force."""


def load_demo_data(*, force: bool = False) -> Iterator[str]:
    """The demo's progress lines, one per step; raises DemoDataRefused at once (nothing written)
    when the settings profile does not allow demo data and `force` is not given."""
    if not (settings.DEMO_DATA_ALLOWED or force):
        raise DemoDataRefused(
            "demo data creates a superuser with a published password; this settings profile refuses it"
            " (DEMO_DATA_ALLOWED is off). Use --force to load it anyway."
        )
    return _load_demo_data()


def _load_demo_data() -> Iterator[str]:
    staff = user_ensure(email=DEMO_STAFF_EMAIL, password=DEMO_PASSWORD, is_staff=True, is_superuser=True)
    user_ensure(email=DEMO_CUSTOMER_EMAIL, password=DEMO_PASSWORD)
    yield load_demo_inventory(staff=staff)
    breaches = stock_ledger_breaches()
    if breaches:
        raise RuntimeError(f"demo data left {len(breaches)} stock invariant breaches: {breaches[:3]}")
    yield f"demo users: {DEMO_STAFF_EMAIL} (staff), {DEMO_CUSTOMER_EMAIL} (shopper), password {DEMO_PASSWORD}"
