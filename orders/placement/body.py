"""The response body of a placed order, as each placement path gets it.

The ORM path renders the order it has just built with the lines and allocations it holds
(`placed_lines`: rendering while stock rows are locked costs no query); the SQL
path receives the body orders_place_order built as jsonb, whose keys PostgreSQL keeps in its own
order, and `sql_body` puts them back in the API's order (ORDER_FIELDS, from OrderSerializer).
"""

from inventory.models import StockLevel, Warehouse
from orders.models import Allocation, OrderLine
from orders.serializers import LINE_FIELDS, ORDER_FIELDS


def placed_lines(order_lines, products, rows, allocations) -> list[tuple[OrderLine, list[Allocation]]]:
    """The new order's lines, each with its allocations, as order_payload reads them: the
    product and the warehouse code come from what the placement already holds, so rendering
    inside the transaction (while stock rows are locked) costs no query."""
    product_by_id = {product.pk: product for product, _ in products}
    per_line: dict[int, list[Allocation]] = {line.pk: [] for line in order_lines}
    for row, allocation in zip(rows, allocations, strict=True):
        warehouse = Warehouse(pk=allocation.warehouse_id, code=allocation.warehouse_code)
        row.stock_level = StockLevel(pk=allocation.level_id, warehouse=warehouse)
        per_line[row.line_id].append(row)
    for line in order_lines:
        line.product = product_by_id[line.product_id]
    return [(line, per_line[line.pk]) for line in order_lines]


def sql_body(body: dict) -> dict:
    """orders_place_order's body with its keys (and its lines' keys) in the API's order."""
    body["lines"] = [{key: line[key] for key in LINE_FIELDS} for line in body["lines"]]
    return {key: body[key] for key in ORDER_FIELDS}
