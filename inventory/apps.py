from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"

    def ready(self):
        # Django's place for start-up work that needs the models: the metric series exist from the
        # first scrape.
        from inventory import metrics  # imports the models: only once they are loaded

        metrics.initialise_series()
