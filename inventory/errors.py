from project.errors import DomainError, IdempotencyKeyRequired, IdempotencyKeyReused, InvalidInput, VersionConflict

__all__ = [
    "DeliveryKeyRequired",
    "DeliveryKeyReused",
    "InStockNow",
    "InsufficientStock",
    "InvalidInput",
    "InvalidStock",
    "PurchaseOrderClosed",
    "PurchaseOrderNotDraft",
    "SellingRulesConflict",
    "VersionConflict",
    "WarehouseBusy",
]


class InvalidStock(DomainError):
    code = "invalid_stock"
    default_detail = "This change would leave on_hand below reserved or below zero."


class InsufficientStock(DomainError):
    """Not enough available units; `items` lists each short SKU with requested and available."""

    code = "insufficient_stock"
    default_detail = "Not enough stock."

    def __init__(self, items: list[dict], detail: str | None = None):
        self.items = items
        super().__init__(detail, extra={"items": items})


class WarehouseBusy(DomainError):
    code = "warehouse_has_allocations"
    default_detail = "This warehouse still has reserved units (live allocations); it cannot be deactivated."


class SellingRulesConflict(DomainError):
    """Hot mode takes units from buckets without the level's row: it cannot keep a level's safety
    stock back or count its backorders, so the two are never on at once."""

    code = "selling_rules_conflict"
    default_detail = "Hot mode cannot be combined with backorders, preorders or safety stock."


class PurchaseOrderClosed(DomainError):
    code = "purchase_order_closed"
    default_detail = "This purchase order is no longer open: it was received in full or cancelled."


class DeliveryKeyReused(IdempotencyKeyReused):
    default_detail = "This delivery key was used for other lines of this purchase order."


class DeliveryKeyRequired(IdempotencyKeyRequired):
    default_detail = "Send an Idempotency-Key header: a unique string per delivery, up to 64 characters."


class InStockNow(DomainError):
    """A back-in-stock subscription for a product shoppers can buy right now."""

    code = "in_stock"
    default_detail = "This product is in stock now: order it instead of waiting for it."


class PurchaseOrderNotDraft(DomainError):
    """Confirming or editing a purchase order that is no longer a draft (inventory.reorder)."""

    code = "purchase_order_not_draft"
    default_detail = "Only a draft purchase order can be confirmed or edited; this one is open, received or cancelled."
