"""Lines of SKU and quantity that staff send (purchase orders, their deliveries, draft edits),
checked the same way everywhere."""

from inventory.errors import InvalidInput
from inventory.models import is_sku
from inventory.serializers import MAX_QUANTITY
from project.values import is_whole_number

MAX_LINES = 500


def sku_quantity_lines(lines: object, *, minimum: int = 1) -> list[tuple[str, int]]:
    """(sku, quantity) pairs: 1 to MAX_LINES of them, each SKU once, each quantity a whole number
    from `minimum` to MAX_QUANTITY; InvalidInput naming every bad line otherwise."""
    if not isinstance(lines, list | tuple) or not 1 <= len(lines) <= MAX_LINES:
        raise InvalidInput(fields={"lines": [f"Give 1 to {MAX_LINES} lines of SKU and quantity."]})
    problems, seen, pairs = [], set(), []
    for number, line in enumerate(lines, start=1):
        sku, quantity = line if isinstance(line, list | tuple) and len(line) == 2 else (None, None)
        if not is_sku(sku):
            problems.append(f"Line {number}: not a SKU.")
        elif sku in seen:
            problems.append(f"Line {number}: {sku} is already on another line.")
        elif not is_whole_number(quantity, minimum=minimum, maximum=MAX_QUANTITY):
            problems.append(f"Line {number}: the quantity must be a whole number from {minimum} to {MAX_QUANTITY}.")
        else:
            seen.add(sku)
            pairs.append((sku, quantity))
    if problems:
        raise InvalidInput(fields={"lines": problems})
    return pairs
