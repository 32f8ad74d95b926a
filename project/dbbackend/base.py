"""PostgreSQL backend: django-prometheus's instrumented wrapper plus the circuit breaker."""

import psycopg
from django_prometheus.db.backends.postgresql import base

from project.circuit import CircuitOpen, breaker_for


class DatabaseWrapper(base.DatabaseWrapper):
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
