from django.apps import AppConfig

from orders import metrics
from project.observability.queries import register_locking_functions
from project.webhooks.events import register_event_types


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        # The app's metric series exist from the first scrape, and the platform learns which of
        # our SQL functions lock (it names no app itself).
        metrics.initialise_series()
        register_locking_functions(*metrics.LOCKING_SQL_FUNCTIONS)
        # Stock that arrives fills this app's backorders first, in the arrival's transaction.
        from inventory.services import on_stock_arrival
        from orders.backorders import lock_waiting_orders

        on_stock_arrival(lock_waiting_orders)
        # The webhook event types this app emits (orders.events).
        from orders.events import EVENT_TYPES
        from orders.serializers import OrderEventDataSerializer

        register_event_types(EVENT_TYPES, shapes=dict.fromkeys(EVENT_TYPES, OrderEventDataSerializer))
