"""Demo catalogue and stock, created through the services; products that exist are left alone."""

import random
from decimal import Decimal

from inventory import services
from inventory.models import Product, Warehouse

WAREHOUSES = [("MAIN", "Main warehouse", 1), ("EAST", "East depot", 2), ("WEST", "West depot", 3)]
ADJECTIVES = ["Blue", "Green", "Red", "Oak", "Steel", "Linen", "Stone", "Glass", "Copper", "Walnut"]
THINGS = ["mug", "bowl", "plate", "lamp", "chair", "stool", "vase", "jar", "tray", "shelf"]
PRODUCT_COUNT = 300


def load_demo_inventory(*, staff=None) -> str:
    for code, name, priority in WAREHOUSES:
        if not Warehouse.objects.filter(code=code).exists():
            services.warehouse_create(code=code, name=name, priority=priority)
    existing = set(Product.objects.filter(sku__startswith="DEMO-").values_list("sku", flat=True))
    rng = random.Random(42)  # noqa: S311 - the same demo shop every time, not security
    created = 0
    for n in range(1, PRODUCT_COUNT + 1):
        sku = f"DEMO-{n:04d}"
        adjective, thing = ADJECTIVES[n % len(ADJECTIVES)], THINGS[(n // len(ADJECTIVES)) % len(THINGS)]
        price = Decimal(rng.randint(300, 12000)) / 100
        main_units, east_units = rng.randint(0, 60), rng.randint(0, 25)
        if sku in existing:
            continue
        services.product_create(
            sku=sku,
            name=f"{adjective} {thing} {n}",
            price=price,
            description=f"A {adjective.lower()} {thing}, demo item {n}.",
        )
        for code, units in (("MAIN", main_units), ("EAST", east_units)):
            if units:
                services.stock_receive(sku=sku, warehouse_code=code, quantity=units, actor=staff, reference="demo")
        created += 1
    return f"demo inventory: {created} products created, {len(existing)} already there, {len(WAREHOUSES)} warehouses"
