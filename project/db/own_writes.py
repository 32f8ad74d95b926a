"""What each signed-in client last wrote, so its next requests never read an older state.

After a request that wrote (an unsafe method, or a write the router saw), the primary's WAL
position is read (one statement, in those requests only) and kept in Redis under the principal:
the user, which covers the shop's session, the admin's and every bearer key of that user. So a
staff member who edits in the admin and looks in the shop, a script that writes with a key and a
browser that reads, each read their own writes on any web node. A cookie would cover one browser
only, and bearer clients ignore cookies.

The position is kept OWN_WRITE_SECONDS (several times the replica's lag bound): after that, any
replica still in use holds the write anyway (project.db.replica skips one further behind). A later
write only raises it (a Lua script: two requests of one user may finish out of order), and each
write starts its time again, so the key's remaining time also says how long ago the client last
wrote (`since`: inventory.availability uses it for the values each process keeps).

Anonymous clients write nothing the catalogue shows, and are not tracked. When Redis does not
answer, the client's last write is UNKNOWN and its reads go to the primary: safe, never an error.
Tracking is on only with a replica configured (nothing to protect against otherwise).
"""

import logging
import math
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from project.db.redis import cache_connections
from project.db.wal import primary_lsn

logger = logging.getLogger("stockroom.replica")

# A write raises the kept position (zero-padded hex compares as numbers) and restarts its time.
REMEMBER_SCRIPT = """
local kept = redis.call('GET', KEYS[1])
if (not kept) or kept < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
LOOKUP_SCRIPT = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"


@dataclass(frozen=True)
class OwnWrite:
    lsn: int  # the primary's WAL position after the client's last write
    age: float  # seconds since it was kept, on Redis' clock (an upper bound of the write's age)


UNKNOWN = OwnWrite(lsn=2**63, age=0.0)  # Redis did not answer: assume a write just now, far ahead


class _Client:
    """The request's client, its last write looked up at most once."""

    def __init__(self, request):
        self.request = request
        self.looked_up = False
        self.own: OwnWrite | None = None


_client: ContextVar[_Client | None] = ContextVar("own_writes_client", default=None)


def tracking() -> bool:
    return "replica" in settings.DATABASES


def own_write_seconds() -> float:
    """How long a client's last write is kept: several times the replica's bound, and at least
    the availability bound (inventory.availability compares its values' age with it)."""
    return max(4 * settings.REPLICA_MAX_LAG_SECONDS, settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS / 1000, 1.0)


def _key(principal: str) -> str:
    return f"{settings.CACHE_KEY_PREFIX}:own-write:{principal}"


def _principal(request) -> str | None:
    """The signed-in user (a session or a bearer key: DRF sets the request's user once it has
    authenticated), else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


def begin(request):
    """The start of a request: returns the token for `end`."""
    return _client.set(_Client(request) if tracking() else None)


def end(token) -> None:
    _client.reset(token)


def remember(request) -> None:
    """After a request that wrote: keep the primary's position for its client. The statement runs
    on the request's own connection, after everything the request committed."""
    if not tracking():
        return
    principal = _principal(request)
    if principal is None:
        return
    try:
        lsn = primary_lsn()
    except DatabaseError as exc:  # the primary is gone: the write most likely failed with it
        logger.warning("could not read the primary's position after a write: %s", exc)
        return
    try:
        cache_connections().execute(
            "EVAL", REMEMBER_SCRIPT, 1, _key(principal), f"{lsn:016x}", int(own_write_seconds() * 1000)
        )
    except RedisError as exc:
        logger.error("could not keep the client's last write in Redis: %s", exc)


def current() -> OwnWrite | None:
    """The request's client's last write still kept (None: anonymous, none kept, or outside a
    request); UNKNOWN when Redis did not answer. One Redis round trip, on first use in a request."""
    client = _client.get()
    if client is None:
        return None
    if not client.looked_up:
        client.looked_up = True
        client.own = _look_up(client.request)
    return client.own


def _look_up(request) -> OwnWrite | None:
    principal = _principal(request)
    if principal is None:
        return None
    try:
        kept, remaining_ms = cache_connections().execute("EVAL", LOOKUP_SCRIPT, 1, _key(principal))
    except RedisError as exc:
        logger.error("could not read the client's last write from Redis: %s", exc)
        return UNKNOWN
    if kept is None:
        return None
    remaining = max(int(remaining_ms), 0) / 1000
    return OwnWrite(lsn=int(kept, 16), age=max(own_write_seconds() - remaining, 0.0))


def since() -> float:
    """Seconds since the request's client last wrote (infinite if it has not, lately)."""
    own = current()
    return math.inf if own is None else own.age
