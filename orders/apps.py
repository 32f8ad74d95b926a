from django.apps import AppConfig

from project.observability.queries import register_locking_functions


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        # Django's place for start-up work that needs the models: the app's metric series exist
        # from the first scrape, and the platform learns which of our SQL functions lock.
        from orders import metrics  # imports the models: only once they are loaded

        metrics.initialise_series()
        register_locking_functions(*metrics.LOCKING_SQL_FUNCTIONS)
