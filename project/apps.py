from django.apps import AppConfig
from django.core.checks import Tags, register

from project.checks import metrics_access


class ProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Stockroom"

    def ready(self):
        # Every process (web, worker, relay, manage.py): metrics series, statement timing, pool stats.
        from project import db_pool_metrics, observability, slow_queries

        observability.initialise_series()
        slow_queries.install()
        db_pool_metrics.install()
        register(metrics_access, Tags.security)
