from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Stockroom"

    def ready(self):
        # Every process (web, worker, relay, manage.py): metrics series, statement timing, pool stats.
        from project import db_pool_metrics, observability, slow_queries

        observability.initialise_series()
        slow_queries.install()
        db_pool_metrics.install()
