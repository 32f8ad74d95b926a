"""Every operation of the live OpenAPI schema fuzzed by schemathesis, as staff and as a customer.

The schema is fetched from `/api/schema/` of a real gunicorn on the test database. Each operation
gets EXAMPLES generated cases per generation mode, each sent once with a staff key and once with
a customer key. Checks: no 5xx, the body matches the declared response schema, the status is one
the operation declares. Derandomized and without an example database, so a run repeats exactly.

Two passes:
- the schema as served, positive and negative cases: odd paths, headers, queries and bodies;
- the same schema told about the shop (request-only parts narrowed to the SKUs, warehouses,
  order numbers, import ids, key prefixes and ETags that exist), positive cases: random input
  alone never names an existing order, so this pass is what reaches placement, payment,
  fulfilment, shipments and returns, PATCH with a right If-Match, stock writes, token creation and
  their response bodies.

Schemathesis' pytest decorator (`schema.parametrize()` with `from_fixture`) does not run on
pytest 9.2 (it writes a node attribute pytest no longer has), so each operation's strategy is
driven by Hypothesis' own `@given`; failures of every operation are collected and reported
together.
"""

import copy
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from inventory import services as stock
from inventory.models import ImportJob
from orders import services as order_services
from orders.api import render_order
from orders.models import Order
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.reliability.support import bearer, live_gunicorn
from users.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 25
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
SKUS = ["MUG", "TEA", "PEN"]
WAREHOUSES = ["MAIN", "EAST"]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def fuzz_shop(tmp_path):
    """A live gunicorn over a small shop: two warehouses, three products with stock, a staff and a
    customer key, a spare key to revoke, orders in several states and one import."""
    for priority, code in enumerate(WAREHOUSES, start=1):
        WarehouseFactory(code=code, priority=priority)
    for sku in SKUS:
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=60)
        stock.stock_receive(sku=sku, warehouse_code="EAST", quantity=20)
    staff = UserFactory(email="staff@example.com", password=PASSWORD, is_staff=True)
    customer = UserFactory(email="customer@example.com", password=PASSWORD)
    _, staff_key = api_key_create(user=staff, scopes=["read", "write", "staff"])
    _, customer_key = api_key_create(user=customer, scopes=["read", "write"])
    spare, _ = api_key_create(user=customer, name="spare")
    # Orders for each transition, in the state it starts from (the fuzzer runs cancel before pay).
    # New shipments and returns get paid and fulfilled orders of every SKU, 5 units each (what a
    # narrowed quantity can ask); each order of `parcels` holds two pending shipments, one for the
    # ship operation and one for the cancel operation.
    numbers = {}
    groups = [
        ("cancel", None),
        ("pay", None),
        ("fulfil", "paid"),
        ("return", "fulfilled"),
        ("shipments", "paid"),
        ("returns", "fulfilled"),
        ("parcels", "paid"),
    ]
    for group, state in groups:
        numbers[group] = []
        for n in range(3):
            if group in ("shipments", "returns"):
                lines = [order_services.OrderLineRequest(sku, 5) for sku in SKUS]
            else:
                lines = [order_services.OrderLineRequest(SKUS[n], 2 if group == "parcels" else 1)]
            placed = order_services.order_place(
                user=customer,
                lines=lines,
                shipping_address=ADDRESS,
                render=render_order,
                idempotency_key=f"seed-{group}-{n}",
                fingerprint=f"seed-{group}-{n}",
            )
            order_id = Order.objects.get(number=placed.body["number"]).pk
            if state in ("paid", "fulfilled"):
                order_services.order_pay(order_id=order_id)
            if state == "fulfilled":
                order_services.order_fulfil(order_id=order_id, actor=staff)
            numbers[group].append(placed.body["number"])
    parcels = {"ship": [], "cancel": []}
    for order in Order.objects.filter(number__in=numbers["parcels"]).prefetch_related("lines"):
        (line,) = order.lines.all()
        for operation in parcels.values():
            pending = order_services.shipment_create(
                order_id=order.pk, warehouse="MAIN", lines=[order_services.ShipmentLineRequest(line.pk, 1)]
            )
            operation.append(pending.pk)
    job = ImportJob.objects.create(file="imports/none.csv", original_name="none.csv", created_by=staff)
    with live_gunicorn(tmp_path) as server:
        yield {
            "server": server,
            "keys": {"staff": staff_key, "customer": customer_key},
            "numbers": numbers,
            "parcels": parcels,
            "prefixes": [spare.prefix],
            "import_ids": [job.pk],
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"[:1500]


def _fuzz(operation, mode: GenerationMode, shop: dict, seen: Counter) -> None:
    server, keys = shop["server"], shop["keys"]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # No shrinking: each step is an HTTP call; the first failing case is reported as it is.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        for role in ("staff", "customer"):
            response = case.call_and_validate(
                base_url=server.base, headers=bearer(keys[role]), checks=CHECKS, timeout=30
            )
            seen[(operation.label, response.status_code)] += 1

    run()


def _fuzz_schema(schema, modes, shop: dict) -> tuple[list[str], Counter]:
    failures, unsatisfiable, operations, seen = [], [], 0, Counter()
    for result in schema.get_all_operations():
        operation = result.ok()  # an invalid operation definition fails the test here
        operations += 1
        for mode in modes:
            try:
                _fuzz(operation, mode, shop, seen)
            except Unsatisfiable:
                # No case of this mode exists (nothing in a free-form string path can break its
                # schema): nothing was sent, so nothing failed.
                unsatisfiable.append(f"{operation.label} ({mode.value})")
            # Schemathesis raises a FailureGroup (a BaseExceptionGroup): every operation's failures
            # are collected, so one run reports them all.
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} ({mode.value}): {_describe(exc)}")
    assert operations >= 20, "operations are missing from the schema"
    assert len(unsatisfiable) < operations, unsatisfiable
    print("\n".join(f"{label}: {status} x{count}" for (label, status), count in sorted(seen.items())))
    return failures, seen


def _served_schema(shop: dict) -> dict:
    response = httpx.get(shop["server"].url("/api/schema/?format=json"), timeout=10)
    assert response.status_code == 200
    return response.json()


def _narrow_to_the_shop(raw: dict, shop: dict) -> dict:
    """The schema with its request-only parts narrowed to values that exist in the shop (plus one
    that does not). Response schemas are untouched, so validation stays exactly as served."""
    schema = copy.deepcopy(raw)
    every_number = [number for group in shop["numbers"].values() for number in group]
    path_values = {
        "sku": [*SKUS, "NOPE"],
        "number": [*every_number, "SR-NONE-0000"],
        "import_id": [*shop["import_ids"], 999_999],
        "prefix": [*shop["prefixes"], "nope"],
    }
    header_values = {
        "If-Match": ['"1"', '"2"', '"3"'],
        "If-None-Match": ['"1"', '"2"'],
        # A small alphabet: keys repeat, so replays and 422 (same key, other body) happen too.
        "Idempotency-Key": {"type": "string", "pattern": "^k[0-9]{1,2}$"},
    }
    for path, operations in schema["paths"].items():
        transition = path.rsplit("/", 1)[1]
        group = "parcels" if "/shipments/{shipment_id}" in path else transition
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                if parameter["in"] == "path" and name == "number" and group in shop["numbers"]:
                    # Each transition gets orders in the state it starts from.
                    parameter["schema"] = {"enum": [*shop["numbers"][group], "SR-NONE-0000"]}
                elif parameter["in"] == "path" and name == "shipment_id":
                    ids = shop["parcels"].get(transition, [*shop["parcels"]["ship"], *shop["parcels"]["cancel"]])
                    parameter["schema"] = {"enum": [*ids, 999_999]}
                elif parameter["in"] == "path" and name in path_values:
                    parameter["schema"] = {"enum": path_values[name]}
                elif parameter["in"] == "header" and name in header_values:
                    values = header_values[name]
                    parameter["schema"] = {"enum": values} if isinstance(values, list) else values
    body_values = {
        "sku": [*SKUS, "NOPE"],
        "warehouse": [*WAREHOUSES, "NOPE"],
        "from": WAREHOUSES,
        "to": WAREHOUSES,
        "email": ["customer@example.com", "staff@example.com"],
        "password": [PASSWORD, "wrong password"],
        # Selling rules a product in hot mode can take (a backorder policy or a preorder date would
        # be refused beside the buckets the fuzzer may switch on: a 409 or 400, rightly).
        "backorder_policy": ["deny"],
        "preorder_until": [None],
    }
    small = {"quantity": 5, "delta": 5, "on_hand": 100, "expected_version": 4}
    for name, component in schema["components"]["schemas"].items():
        if not name.endswith("Request"):
            continue  # a response schema: validated as served
        properties = component.get("properties", {})
        # Positive cases without invented fields (the API refuses those on PATCH, rightly).
        component["additionalProperties"] = False
        if name == "OrderRequestRequest":
            properties["lines"].update(minItems=1, maxItems=3)
        if name in ("ShipmentCreateRequest", "ReturnCreateRequest"):
            properties["lines"].update(minItems=1, maxItems=2)
        for field, values in body_values.items():
            if field in properties and name != "ProductCreateRequest":  # new products get new SKUs
                properties[field] = {"enum": values}
        for field, bound in small.items():
            if field in properties:
                properties[field] = {"type": "integer", "minimum": -bound if field == "delta" else 1, "maximum": bound}
    return schema


def test_every_operation_answers_as_declared_to_odd_input(fuzz_shop):
    schema = schemathesis.openapi.from_dict(_served_schema(fuzz_shop))
    failures, _ = _fuzz_schema(schema, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], fuzz_shop)
    assert not failures, "\n\n".join(failures)
    assert fuzz_shop["server"].tracebacks() == []


def test_every_operation_answers_as_declared_on_the_shops_own_data(fuzz_shop):
    schema = schemathesis.openapi.from_dict(_narrow_to_the_shop(_served_schema(fuzz_shop), fuzz_shop))
    failures, seen = _fuzz_schema(schema, [GenerationMode.POSITIVE], fuzz_shop)
    assert not failures, "\n\n".join(failures)
    assert fuzz_shop["server"].tracebacks() == []
    # The pass reached the deep paths it exists for.
    reached = {(label, status) for (label, status) in seen}
    for expected in [
        ("POST /api/v1/orders", 201),
        ("POST /api/v1/orders/{number}/pay", 200),
        ("PATCH /api/v1/products/{sku}", 200),
        ("POST /api/v1/stock/adjustments", 201),
        ("POST /api/v1/auth/tokens", 201),
        ("POST /api/v1/orders/{number}/returns", 201),
    ]:
        assert expected in reached, expected
