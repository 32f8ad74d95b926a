"""Cache-aside for catalogue reads, with versioned keys.

What is cached is the slow-changing part of the catalogue: name, description, price, active.
Availability changes with every order and is laid over the cached entries at each read instead
(inventory.availability), so stock changes leave this cache alone.

Each product has a version token, and the catalogue list has one. A change to a product's data
(an edit, a new product, an import) replaces both tokens after commit (never on rollback). Every entry keeps the
tokens it was built under, and a read fetches the entry and the current tokens in one MGET (one
Redis round trip): an entry whose tokens are not the current ones is a miss, and is overwritten
by the rebuilt value. Stock decisions never read this cache. Redis being down makes every read
a miss (django-redis IGNORE_EXCEPTIONS, and the same for the reads and invalidations that go
through project.db.redis: the MGET of every read and the MSET of every change).

Every product built is also kept under a "last good" key that no token changes, and so is every
list page its caller names as one to keep (a bounded set: the API keeps first pages of the whole
catalogue, not searches or later pages, which anyone can vary without end). When PostgreSQL
cannot be reached, a read that misses is answered from there and the response is marked
`X-Stale: true` (project.http.degraded); with nothing kept, the outage surfaces as a 503.

With a read replica, a change's tokens carry the primary's WAL position after it, and an entry
rebuilt under them reads the replica only once it has replayed that far: a replica still behind
the change never puts the value it replaced back into the cache (project.db.replica).

What a read may leave behind is bounded: list keys are built by their callers from validated
parameters only, and a product that does not exist leaves nothing (its token, created before the
build as every token is, is deleted again), so well-formed unknown SKUs cannot fill Redis.
"""

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, transaction
from django_prometheus.cache.metrics import django_cache_get_total, django_cache_hits_total, django_cache_misses_total
from redis.exceptions import RedisError

from project.db import replica, wal
from project.db.redis import cache_connections
from project.db.transactions import is_lock_error
from project.http.degraded import mark_stale

logger = logging.getLogger("stockroom.cache")

LIST_TOKEN_KEY = "catalogue:list:token"  # noqa: S105 - a cache key name, not a secret
# Part of every product key too: a change touching many products (an import, the expiry sweep)
# replaces this one token instead of one per product.
GENERATION_KEY = "catalogue:generation"
MANY_PRODUCTS = 100
# django-prometheus's cache counters, which its backend bumps in `get` only: catalogue reads (one
# MGET each) bump them here. Created at import, so every series is scraped from the start at 0.
_READS = django_cache_get_total.labels(backend="redis")
_HITS = django_cache_hits_total.labels(backend="redis")
_MISSES = django_cache_misses_total.labels(backend="redis")
TTL_SECONDS = 300


def _read(keys: list[str]) -> dict:
    """The values found under `keys` in one MGET, decoded as django-redis does; nothing found
    when Redis cannot answer."""
    client = cache.client
    try:
        values = cache_connections().execute("MGET", *[client.make_key(key) for key in keys])
    except RedisError as exc:
        logger.error("catalogue read from Redis failed: %s", exc)
        return {}
    return {key: client.decode(value) for key, value in zip(keys, values, strict=True) if value is not None}


def _product_token_key(sku: str) -> str:
    return f"catalogue:product:{sku}:token"


def _tokens(keys: list[str], found: dict) -> str:
    """The current tokens of `keys` from an MGET's result; a token missing (first read, or
    evicted) is created, and then read back, since another process may have won the race."""
    missing = [key for key in keys if key not in found]
    for key in missing:
        cache.add(key, uuid.uuid4().hex, timeout=None)
    if missing:
        found = {**found, **cache.get_many(missing)}
    return ":".join(found.get(key, "no-cache") for key in keys)


def _change_position() -> str:
    """What the tokens of a change just committed carry: with a replica, the primary's WAL position
    after the change ("@<position>"). An entry rebuilt under such a token is read from the replica
    only once the replica has replayed that far (project.db.replica.at_least), so the value the
    change replaced is never stored under the new token, nor as the last good copy."""
    if not replica.configured():
        return ""
    try:
        return f"@{wal.primary_lsn()}"
    except OperationalError:  # the primary is gone: nothing is rebuilt from anywhere until it is back
        return f"@{2**63}"


def _required_position(token: str) -> int:
    """The newest change among an entry's tokens (joined by ":"): 0 for tokens without one."""
    return max((int(part.rpartition("@")[2]) for part in token.split(":") if "@" in part), default=0)


def _new_tokens(skus: list[str]) -> None:
    position = _change_position()
    if len(skus) > MANY_PRODUCTS:
        tokens = {GENERATION_KEY: uuid.uuid4().hex + position}
    else:
        tokens = {_product_token_key(sku): uuid.uuid4().hex + position for sku in skus}
    tokens[LIST_TOKEN_KEY] = uuid.uuid4().hex + position
    # One MSET (tokens never expire), in django-redis's key and value format. Its set_many sends
    # a MULTI/EXEC pipeline of SETs instead, which cost every order twice as much.
    client = cache.client
    pairs = [part for key, value in tokens.items() for part in (client.make_key(key), client.encode(value))]
    try:
        cache_connections().execute("MSET", *pairs)
    except RedisError as exc:  # as IGNORE_EXCEPTIONS does: entries then live out their TTL
        logger.error("catalogue invalidation failed: %s", exc)


def catalogue_changed(skus: Iterable[str]) -> None:
    """Invalidate the cached reads of these products and of the list, once the transaction commits.
    For changes to product data; a change of stock needs nothing here (inventory.availability)."""
    changed = sorted(set(skus))
    transaction.on_commit(lambda: _new_tokens(changed))


def _cached(key: str, token_keys: list[str], last_good_key: str | None, build: Callable[[], Any]) -> Any:
    """The entry under `key` if built under the current tokens, else `build()` stored under them.
    Nothing is stored for None; the first token key is the entry's own, deleted again then if this
    read created it (deleting a token is always safe: entries built under it become misses)."""
    found = _read([*token_keys, key])
    token = _tokens(token_keys, found)
    entry = found.get(key)
    # django-prometheus counts hits and misses in `get` only; this read is one of those.
    _READS.inc()
    if entry is not None and entry[0] == token:
        _HITS.inc()
        return entry[1]
    _MISSES.inc()
    try:
        with replica.at_least(_required_position(token)):
            value = build()
    except OperationalError as exc:
        if is_lock_error(exc):
            raise
        last_good = cache.get(last_good_key) if last_good_key else None
        if last_good is None:
            raise
        mark_stale()
        return last_good
    if value is None:
        if token_keys[0] not in found:
            cache.delete(token_keys[0])
        return None
    cache.set_many({key: (token, value)}, TTL_SECONDS)
    if last_good_key:
        cache.set_many({last_good_key: value}, settings.CATALOGUE_STALE_TTL_SECONDS)
    return value


def cached_product(sku: str, build: Callable[[], Any]) -> Any:
    token_keys = [_product_token_key(sku), GENERATION_KEY]
    return _cached(f"catalogue:product:{sku}", token_keys, f"catalogue:last:product:{sku}", build)


def cached_list(params: str, build: Callable[[], Any], *, keep_last_good: bool = False) -> Any:
    """A list page, keyed by `params`, valid under the list token. `params` must be built from
    validated parameters only (each distinct string is an entry). `keep_last_good` is asked for,
    never assumed: only for a bounded set of pages (each keeps a copy for
    CATALOGUE_STALE_TTL_SECONDS)."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, params).hex
    last_good_key = f"catalogue:last:list:{digest}" if keep_last_good else None
    return _cached(f"catalogue:list:{digest}", [LIST_TOKEN_KEY], last_good_key, build)
