"""Send catalogue reads to the read replica when one is configured.

A read goes to the replica only when its model is named in settings.REPLICA_READ_MODELS (the
catalogue: products, warehouses, stock levels), outside any transaction, and nothing has been
written in this request yet: a shopper who just changed something must read their own write, and
a decision under a lock must read the primary.
"""

from contextvars import ContextVar

from django.conf import settings
from django.db import connections

REPLICA = "replica"

wrote_in_request: ContextVar[bool] = ContextVar("wrote_in_request", default=False)


class ReplicaRouter:
    def __init__(self):
        self.replica_models = frozenset(tuple(name) for name in settings.REPLICA_READ_MODELS)

    def db_for_read(self, model, **hints):
        if REPLICA not in settings.DATABASES:
            return None
        if (model._meta.app_label, model._meta.model_name) not in self.replica_models:
            return None
        if wrote_in_request.get() or connections["default"].in_atomic_block:
            return "default"
        return REPLICA

    def db_for_write(self, model, **hints):
        wrote_in_request.set(True)
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica is a copy of the primary: same rows, same ids

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"


class ReadYourWritesMiddleware:
    """Each request starts without writes; the router then keeps its reads after a write on the primary."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = wrote_in_request.set(False)
        try:
            return self.get_response(request)
        finally:
            wrote_in_request.reset(token)
