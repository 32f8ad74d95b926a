"""The shopper's cart: SKUs and quantities in the session, checked every time they are read back.

The session is trusted storage, but a cart can still hold things that are no longer true (a
product retired since it was added) or were never valid (a session row edited by hand, an old
format). Reading the cart drops whatever is not a known, active SKU with a whole quantity from
1 to ORDER_MAX_QUANTITY, keeps every good line, and reports what it dropped so the page can say
so. Availability shown next to a line is the cached catalogue figure; stock is only decided when
the order is placed (orders.placement.order_place).

Django's `login()` cycles the session key but keeps its data, so a cart built before logging in
is still there afterwards; `logout()` flushes the session, cart included.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import islice

from django.conf import settings

from inventory.models import is_sku
from inventory.selectors import beyond_shelf, catalogue_entry, sold
from project.values import is_whole_number

SESSION_KEY = "cart"


@dataclass(frozen=True)
class CartLine:
    sku: str
    name: str
    price: Decimal
    quantity: int
    available: int
    beyond: str = ""  # sold beyond the shelf: "backorder", "preorder" (inventory.selectors.beyond_shelf)

    @property
    def total(self) -> Decimal:
        return self.price * self.quantity

    @property
    def short(self) -> bool:
        return self.quantity > self.available


def is_quantity(value: object) -> bool:
    return is_whole_number(value, minimum=1, maximum=settings.ORDER_MAX_QUANTITY)


def _good_lines(raw: dict) -> Iterator[tuple[str, int]]:
    """The readable lines of a stored cart, at most ORDER_MAX_LINES of them; nothing past the limit
    is looked at, so a cart row of any size costs as much to read as a full cart."""
    for sku, quantity in islice(raw.items(), settings.ORDER_MAX_LINES):
        if is_sku(sku) and is_quantity(quantity):
            yield sku, quantity


class Cart:
    """The session cart. Quantities are stored per SKU as whole numbers; nothing else is kept."""

    def __init__(self, session):
        self.session = session
        self.problems: list[str] = []
        self.items: dict[str, int] = self._read()

    # --- reading back, with validation -------------------------------------------------------

    def _read(self) -> dict[str, int]:
        raw = self.session.get(SESSION_KEY)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.append("Your cart could not be read and was emptied.")
            self.session[SESSION_KEY] = {}
            return {}
        items = dict(_good_lines(raw))
        dropped = len(raw) - len(items)
        if dropped:
            self.problems.append(
                f"{dropped} cart line{'s' if dropped != 1 else ''} could not be read and "
                f"{'were' if dropped != 1 else 'was'} removed; the rest of your cart is as you left it."
            )
            self._save(items)
        return items

    def _save(self, items: dict[str, int]) -> None:
        self.items = items
        self.session[SESSION_KEY] = dict(items)
        self.session.modified = True

    def __len__(self) -> int:
        return len(self.items)

    def count(self) -> int:
        """Units in the cart (the header shows it; no database or cache read)."""
        return sum(self.items.values())

    def lines(self) -> list[CartLine]:
        """The cart's lines with names, prices and cached availability, in the order they were added.

        A SKU that is unknown or no longer sold is removed here, with a problem naming it.
        """
        lines, gone = [], []
        for sku, quantity in self.items.items():
            entry = catalogue_entry(sku)
            if not sold(entry):
                gone.append(sku)
                continue
            try:
                price = Decimal(entry["price"])
            except (InvalidOperation, KeyError, TypeError):
                gone.append(sku)
                continue
            available = int(entry.get("available") or 0)
            lines.append(CartLine(sku, entry["name"], price, quantity, available, beyond_shelf(entry)))
        if gone:
            self.problems.append(f"No longer sold, removed from your cart: {', '.join(gone)}.")
            self._save({sku: q for sku, q in self.items.items() if sku not in gone})
        return lines

    # --- changes (validated by the caller's form; checked again here) ------------------------

    def add(self, sku: str, quantity: int) -> str | None:
        """Add units of a sold SKU. Returns a reason when refused (the cart is then unchanged)."""
        if not sold(catalogue_entry(sku)):
            return f"There is no product {sku!r} for sale."
        total = self.items.get(sku, 0) + quantity
        if not is_quantity(total):
            return f"At most {settings.ORDER_MAX_QUANTITY} of one product per order."
        if sku not in self.items and len(self.items) >= settings.ORDER_MAX_LINES:
            return f"A cart holds at most {settings.ORDER_MAX_LINES} different products."
        self._save({**self.items, sku: total})
        return None

    def set(self, sku: str, quantity: int) -> str | None:
        if sku not in self.items:
            return f"{sku!r} is not in your cart."
        if not is_quantity(quantity):
            return f"Quantities are whole numbers from 1 to {settings.ORDER_MAX_QUANTITY}."
        self._save({**self.items, sku: quantity})
        return None

    def remove(self, sku: str) -> bool:
        if sku not in self.items:
            return False
        self._save({key: q for key, q in self.items.items() if key != sku})
        return True

    def remove_all(self, skus: Iterable[str]) -> None:
        drop = set(skus)
        self._save({key: q for key, q in self.items.items() if key not in drop})

    def empty(self) -> None:
        self._save({})


def cart_summary(request) -> dict:
    """Template context: the cart's unit count, computed only if a template asks for it."""

    def count() -> int:
        # Read-only: the header never rewrites the cart; the cart page reports what it drops.
        raw = getattr(request, "session", {}).get(SESSION_KEY)
        if not isinstance(raw, dict):
            return 0
        return sum(quantity for _, quantity in _good_lines(raw))

    return {"cart_count": count}
