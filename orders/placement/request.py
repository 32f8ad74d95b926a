"""What a placement is asked and what it answers, and the checks both paths run before any query."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from orders.models import Allocation, Order, OrderLine
from project.errors import InvalidInput
from project.values import is_whole_number

# What order_place hands its `render` callable with the new order: each line with its allocations.
PlacedLines = list[tuple[OrderLine, list[Allocation]]]
NUMBER_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud on the phone


@dataclass(frozen=True)
class OrderLineRequest:
    sku: str
    quantity: int


@dataclass
class PlacementResult:
    """What the client gets: a new order (201) or the first response again (`replayed`)."""

    status: int
    body: dict
    replayed: bool
    placed: Order | None = None

    @property
    def order(self) -> Order | None:
        """The order this response is about (loaded on first use: the hot path does not need it)."""
        if self.placed is None and isinstance(self.body, dict) and "number" in self.body:
            self.placed = Order.objects.filter(number=self.body["number"]).first()
        return self.placed


def new_order_number() -> str:
    body = "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(8))
    return f"SR-{body[:4]}-{body[4:]}"


def check_line_count(lines: Sequence[OrderLineRequest]) -> None:
    """One line per SKU, 1 to ORDER_MAX_LINES lines (both placement paths, before any query)."""
    skus = [line.sku for line in lines]
    if len(set(skus)) != len(skus):
        raise InvalidInput(fields={"lines": ["Each SKU may appear on one line only."]})
    if not lines or len(lines) > settings.ORDER_MAX_LINES:
        raise InvalidInput(fields={"lines": [f"An order has 1 to {settings.ORDER_MAX_LINES} lines."]})


def quantity_errors(line: OrderLineRequest) -> dict:
    quantity = line.quantity
    if is_whole_number(quantity, minimum=1, maximum=settings.ORDER_MAX_QUANTITY):
        return {}
    return {"quantity": [f"Must be a whole number from 1 to {settings.ORDER_MAX_QUANTITY}."]}


def check_line_shape(lines: Sequence[OrderLineRequest]) -> None:
    """The checks that need no database (the SQL path's function checks the SKUs itself)."""
    check_line_count(lines)
    problems = [quantity_errors(line) for line in lines]
    if any(problems):
        raise InvalidInput(fields={"lines": problems})
