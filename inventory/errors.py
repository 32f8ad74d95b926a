from project.errors import DomainError, InvalidInput, VersionConflict

__all__ = ["InsufficientStock", "InvalidInput", "InvalidStock", "VersionConflict", "WarehouseBusy"]


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
