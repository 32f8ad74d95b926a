from django.apps import AppConfig
from django.core.checks import Tags, register

# Every Django process creates the Celery app, so shared tasks bind to it (project.celery).
import project.celery  # noqa: F401
from project.db.pooler import check_pooler_limits
from project.observability import metrics, pool, queries
from project.observability.checks import metrics_access
from project.ratelimit import limiter


class ProjectConfig(AppConfig):
    """The wiring. Its ready() runs before the apps' (it comes first in INSTALLED_APPS): it sets up
    the platform only; each app creates its own metrics series in its own ready()."""

    name = "project"
    verbose_name = "Stockroom"

    def ready(self):
        # Every process (web, worker, relay, manage.py): metrics series, statement timing, pool stats.
        # The relay imports the outbox model, so it is imported once the models are loaded.
        from project.outbox import relay

        relay.initialise_series()
        metrics.initialise_series()
        limiter.initialise_series()
        queries.install()
        pool.install()
        register(metrics_access, Tags.security)
        register(check_pooler_limits, Tags.database)  # `check --database default`, and migrate
