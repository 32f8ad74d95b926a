"""Send catalogue reads to the read replica when one is configured, never an older state than the
client has seen.

A read goes to the replica only when its model is named in settings.REPLICA_READ_MODELS (the
catalogue: products, warehouses, stock levels), outside any transaction (a decision under a lock
must read the primary), nothing has been written in this request yet, and the replica is close
enough behind: within REPLICA_MAX_LAG_SECONDS, past the client's own last write (kept across
requests and web nodes, project.db.own_writes) and past the change a cache entry is being rebuilt
for (project.db.replica decides, and counts what it refuses). Otherwise the primary.
"""

from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from project.db import own_writes, replica
from project.db.replica import REPLICA

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

wrote_in_request: ContextVar[bool] = ContextVar("wrote_in_request", default=False)


class ReplicaRouter:
    def __init__(self):
        self.replica_models = frozenset(tuple(name) for name in settings.REPLICA_READ_MODELS)

    def db_for_read(self, model, **hints):
        if REPLICA not in settings.DATABASES:
            return None
        if (model._meta.app_label, model._meta.model_name) not in self.replica_models:
            return None
        if wrote_in_request.get() or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return replica.choose()

    def db_for_write(self, model, **hints):
        wrote_in_request.set(True)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica is a copy of the primary: same rows, same ids

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


class ReadYourWritesMiddleware:
    """Each request starts without writes; the router then keeps its reads after a write on the
    primary. After a request that wrote (an unsafe method: SQL run directly, as order placement's,
    passes no router), its client's position is kept for its next requests (project.db.own_writes)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = wrote_in_request.set(False)
        client = own_writes.begin(request)
        try:
            with replica.request_scope():
                response = self.get_response(request)
            if wrote_in_request.get() or request.method not in SAFE_METHODS:
                own_writes.remember(request)
            return response
        finally:
            own_writes.end(client)
            wrote_in_request.reset(token)
