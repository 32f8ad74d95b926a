"""Demo data for `make run`, loaded through the services and safe to load twice."""

from collections.abc import Iterator

from inventory.demo import load_demo_inventory
from inventory.selectors import stock_ledger_breaches
from project.schedules import schedules_ensure
from users.services import user_ensure

DEMO_STAFF_EMAIL = "staff@example.com"
DEMO_CUSTOMER_EMAIL = "shopper@example.com"
DEMO_PASSWORD = "stockroom-demo"  # noqa: S105 - the published demo login, development only


def load_demo_data() -> Iterator[str]:
    staff = user_ensure(email=DEMO_STAFF_EMAIL, password=DEMO_PASSWORD, is_staff=True, is_superuser=True)
    user_ensure(email=DEMO_CUSTOMER_EMAIL, password=DEMO_PASSWORD)
    created = schedules_ensure()
    yield f"schedules created: {', '.join(created) or 'none (all present)'}"
    yield load_demo_inventory(staff=staff)
    breaches = stock_ledger_breaches()
    if breaches:
        raise RuntimeError(f"demo data left {len(breaches)} stock invariant breaches: {breaches[:3]}")
    yield f"demo users: {DEMO_STAFF_EMAIL} (staff), {DEMO_CUSTOMER_EMAIL} (shopper), password {DEMO_PASSWORD}"
