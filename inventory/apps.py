from django.apps import AppConfig

from project.webhooks.events import register_event_types


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self):
        # Django's place for start-up work that needs the models: the metric series exist from the
        # first scrape.
        from inventory import metrics  # imports the models: only once they are loaded

        metrics.initialise_series()
        # The webhook event types this app emits (inventory.events).
        from inventory.events import BACK_IN_STOCK, EVENT_TYPES, STOCK_CHANGED, STOCK_LOW
        from inventory.serializers import BackInStockDataSerializer, StockChangedDataSerializer, StockLowDataSerializer

        register_event_types(
            EVENT_TYPES,
            shapes={
                STOCK_CHANGED: StockChangedDataSerializer,
                STOCK_LOW: StockLowDataSerializer,
                BACK_IN_STOCK: BackInStockDataSerializer,
            },
        )
