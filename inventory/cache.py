"""Cache-aside for catalogue reads, with versioned keys.

Each product has a version token, and the catalogue list has one. A change to a product's data
or availability replaces both tokens after commit (never on rollback), so every cached entry
that depends on them is simply never read again. Stock decisions never read this cache.
Redis being down makes every read a miss (django-redis IGNORE_EXCEPTIONS).
"""

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import cache
from django.db import transaction

LIST_TOKEN_KEY = "catalogue:list:token"  # noqa: S105 - a cache key name, not a secret
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
    tokens = {_product_token_key(sku): uuid.uuid4().hex for sku in skus}
    tokens[LIST_TOKEN_KEY] = uuid.uuid4().hex
    cache.set_many(tokens, timeout=None)


def catalogue_changed(skus: Iterable[str]) -> None:
    """Invalidate the cached reads of these products and of the list, once the transaction commits."""
    changed = sorted(set(skus))
    transaction.on_commit(lambda: _new_tokens(changed))


def cached_product(sku: str, build: Callable[[], Any]) -> Any:
    key = f"catalogue:product:{sku}:{_token(_product_token_key(sku))}"
    value = cache.get(key)
    if value is None:
        value = build()
        if value is not None:
            cache.set(key, value, TTL_SECONDS)
    return value


def cached_list(params: str, build: Callable[[], Any]) -> Any:
    """A list page, keyed by the list token and the normalised request parameters."""
    key = f"catalogue:list:{_token(LIST_TOKEN_KEY)}:{uuid.uuid5(uuid.NAMESPACE_URL, params).hex}"
    value = cache.get(key)
    if value is None:
        value = build()
        cache.set(key, value, TTL_SECONDS)
    return value
