"""PostgreSQL backend: django-prometheus's instrumented wrapper plus the circuit breaker, and a
pool check that costs no round trip (project.dbbackend.health)."""

import psycopg
from django_prometheus.db.backends.postgresql import base

from project.circuit import CircuitOpen, breaker_for
from project.dbbackend.health import check_pooled_connection


class DatabaseWrapper(base.DatabaseWrapper):
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
