"""Cache-aside for catalogue reads, with versioned keys.

Each product has a version token, and the catalogue list has one. A change to a product's data
or availability replaces both tokens after commit (never on rollback), so every cached entry
that depends on them is simply never read again. Stock decisions never read this cache.
Redis being down makes every read a miss (django-redis IGNORE_EXCEPTIONS).

Every value built is also kept under a "last good" key that no token changes. When PostgreSQL
cannot be reached, a read that misses is answered from there and the response is marked
`X-Stale: true` (project.degraded); with nothing kept, the outage surfaces as a 503.
"""

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, transaction

from project.db import is_lock_error
from project.degraded import mark_stale

LIST_TOKEN_KEY = "catalogue:list:token"  # noqa: S105 - a cache key name, not a secret
# Part of every product key too: a change touching many products (an import, the expiry sweep)
# replaces this one token instead of one per product.
GENERATION_KEY = "catalogue:generation"
MANY_PRODUCTS = 100
TTL_SECONDS = 300


def _product_token_key(sku: str) -> str:
    return f"catalogue:product:{sku}:token"


def _token(key: str) -> str:
    token = cache.get(key)
    if token is None:
        cache.add(key, uuid.uuid4().hex, timeout=None)
        token = cache.get(key) or "no-cache"
    return token


def _new_tokens(skus: list[str]) -> None:
    if len(skus) > MANY_PRODUCTS:
        tokens = {GENERATION_KEY: uuid.uuid4().hex}
    else:
        tokens = {_product_token_key(sku): uuid.uuid4().hex for sku in skus}
    tokens[LIST_TOKEN_KEY] = uuid.uuid4().hex
    cache.set_many(tokens, timeout=None)


def _product_tokens(sku: str) -> str:
    """The product's own token and the catalogue generation, in one round trip."""
    keys = [_product_token_key(sku), GENERATION_KEY]
    found = cache.get_many(keys)
    missing = [key for key in keys if key not in found]
    for key in missing:
        cache.add(key, uuid.uuid4().hex, timeout=None)
    if missing:
        found = cache.get_many(keys)
    return ":".join(found.get(key, "no-cache") for key in keys)


def catalogue_changed(skus: Iterable[str]) -> None:
    """Invalidate the cached reads of these products and of the list, once the transaction commits."""
    changed = sorted(set(skus))
    transaction.on_commit(lambda: _new_tokens(changed))


def _cached(key: str, last_good_key: str, build: Callable[[], Any]) -> Any:
    value = cache.get(key)
    if value is not None:
        return value
    try:
        value = build()
    except OperationalError as exc:
        if is_lock_error(exc):
            raise
        last_good = cache.get(last_good_key)
        if last_good is None:
            raise
        mark_stale()
        return last_good
    if value is not None:
        cache.set_many({key: value}, TTL_SECONDS)
        cache.set_many({last_good_key: value}, settings.CATALOGUE_STALE_TTL_SECONDS)
    return value


def cached_product(sku: str, build: Callable[[], Any]) -> Any:
    key = f"catalogue:product:{sku}:{_product_tokens(sku)}"
    return _cached(key, f"catalogue:last:product:{sku}", build)


def cached_list(params: str, build: Callable[[], Any]) -> Any:
    """A list page, keyed by the list token and the normalised request parameters."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, params).hex
    return _cached(f"catalogue:list:{_token(LIST_TOKEN_KEY)}:{digest}", f"catalogue:last:list:{digest}", build)
