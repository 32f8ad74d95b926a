"""PostgreSQL backend: django-prometheus's instrumented wrapper plus the circuit breaker, and a
pool check that costs no round trip (project.dbbackend.health)."""

import psycopg
from django.db.backends.postgresql import base as django_base
from django_prometheus.db.backends.postgresql import base
from django_prometheus.db.common import ExportingCursorWrapper

from project.circuit import CircuitOpen, breaker_for
from project.dbbackend.health import check_pooled_connection

# django-prometheus's instrumented cursor class, one per (cursor class, alias, vendor).
_cursor_classes: dict[tuple, type] = {}


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        """django-prometheus's parameters, without building a new cursor class on every call:
        Django asks for them on every connect, which with the pool is every request."""
        params = django_base.DatabaseWrapper.get_connection_params(self)
        key = (params["cursor_factory"], self.alias, self.vendor)
        if key not in _cursor_classes:
            _cursor_classes[key] = ExportingCursorWrapper(*key)
        params["cursor_factory"] = _cursor_classes[key]
        return params

    @property
    def pool(self):
        pool = super().pool
        # Django builds the pool with psycopg_pool's own check when CONN_HEALTH_CHECKS is on, and
        # passes `check` itself, so OPTIONS["pool"] cannot name another: swap it in once here.
        if pool is not None and pool._check is not check_pooled_connection:
            pool._check = check_pooled_connection
        return pool

    def get_new_connection(self, conn_params):
        breaker = breaker_for(self.alias)
        try:
            breaker.before_attempt()
        except CircuitOpen as exc:
            # A DB-API error, so Django wraps it as django.db.OperationalError like any outage.
            raise psycopg.OperationalError(str(exc)) from exc
        try:
            connection = super().get_new_connection(conn_params)
        except psycopg.OperationalError:
            breaker.failed()
            raise
        breaker.succeeded()
        return connection
