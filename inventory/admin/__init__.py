"""Staff admin of the inventory app, one module per part of the stock:

- `products`: the catalogue, with each product's stock per warehouse;
- `warehouses`: created and edited through the services, (de)activated by actions;
- `stock_levels`: levels (read-only pages) and their operations (receive, adjust, count, transfer);
- `ledger`: the stock movements, read-only;
- `purchase_orders`: stock expected from suppliers, created by a form, received delivery by
  delivery (idempotent by the form's delivery key) and cancelled by an action;
- `imports`: stock CSV imports (upload, progress, stop, queue again) and the CSV exports page,
  where other apps mount their exports with `mount_export` (orders mounts the orders export);
- `back_in_stock`: shoppers' back-in-stock subscriptions, read-only.

Stock quantities are never edited as fields: receipts, adjustments, counts and transfers are
admin forms (`inventory.admin.forms`) that call the services, with the level's version carried in
the form so a concurrent change shows as a conflict instead of being overwritten. Products are
created and edited through the services too (compare-and-set on `version`), and so are warehouses.
"""

from inventory.admin import back_in_stock, imports, ledger, products, purchase_orders, stock_levels, warehouses
from inventory.admin.imports import mount_export

__all__ = [
    "back_in_stock",
    "imports",
    "ledger",
    "mount_export",
    "products",
    "purchase_orders",
    "stock_levels",
    "warehouses",
]
