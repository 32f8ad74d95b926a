"""Rate limiting: one atomic Redis script call (GCRA) per request, per route group and caller.

Route groups (limits are `RATELIMIT_<GROUP>` settings, "requests/seconds"):

- `read`: GET, HEAD and OPTIONS anywhere (API and pages);
- `write`: every other method, e.g. order placement;
- `auth`: unsafe methods on `RATELIMIT_AUTH_PATHS` (token creation, browser login, sign-up,
  password reset);
- `admin_login`: unsafe methods on `RATELIMIT_ADMIN_LOGIN_PATH`.

`RATELIMIT_EXEMPT_PATHS` and static files are never limited.

Who is counted: `auth` and `admin_login` always by client address (a guessed password is
counted against the guesser, whatever credentials the request carries). `read` and `write` by
API key on /api/ (a bearer key), else by the signed-in user's id (read from the session), else by
client address.

A bearer key is charged only once its secret matched, without asking PostgreSQL: the request is
reduced (by the callable `RATELIMIT_BEARER_CLAIM` names, so the platform never imports the app
that owns keys) to the key's prefix and a proof, an HMAC of the whole key. The script charges the
key's bucket only when that proof equals the one it holds for the prefix, learnt from an earlier
request that DRF authenticated with this key; anything else (an invented key, a victim's prefix
with a wrong secret, a real key not yet learnt) is charged to the client address. When DRF then
accepts a key that was not yet learnt, one more script call learns its proof and moves that
request's charge from the address to the key. So knowing a prefix (shown on account pages and in
the admin) spends nobody's budget, and real keys behind a shared address keep their own budgets.

Failure policy when Redis cannot answer: `read` and `write` fail open (counted in
`stockroom_ratelimit_redis_failures_total`, one warning per `FAILURE_LOG_INTERVAL` per process);
`auth` and `admin_login` fail closed with 503 `rate_limiter_unavailable`.

The algorithm is GCRA (the "generic cell rate algorithm", as in redis-cell): each bucket is one
key holding its theoretical arrival time (TAT) in microseconds of Redis' own clock, so every web
process and host agrees on time. A rate of `limit/window` lets `limit` requests through at once,
then one every `window/limit` seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from importlib import import_module

import redis
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import DatabaseError
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from prometheus_client import Counter

from project.db.redis import PerProcess, RedisConnections, call
from project.errors import envelope
from project.http.requests import is_api_request

logger = logging.getLogger("stockroom.ratelimit")

READ, WRITE, AUTH, ADMIN_LOGIN = "read", "write", "auth", "admin_login"
GROUPS = (READ, WRITE, AUTH, ADMIN_LOGIN)
FAIL_CLOSED = frozenset({AUTH, ADMIN_LOGIN})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FAILURE_LOG_INTERVAL = 60.0
UNAVAILABLE_RETRY_AFTER = 5
# Each gunicorn worker runs a few threads (GUNICORN_THREADS); a script call takes well under a
# millisecond, so a handful of connections per process is plenty.
POOL_SIZE = 16

REDIS_FAILURES = Counter(
    "stockroom_ratelimit_redis_failures_total",
    "Rate-limit checks that could not reach Redis (read/write passed, auth/admin_login refused).",
    ["group"],
)
LIMITED = Counter("stockroom_ratelimit_limited_total", "Requests refused with 429.", ["group"])


def initialise_series() -> None:
    for group in GROUPS:
        LIMITED.labels(group=group)
        REDIS_FAILURES.labels(group=group)


# How long the script remembers a key's proof after the key last authenticated an unlearnt request.
PROOF_TTL_MS = 86_400_000

# ARGV[1] is the mode, ARGV[2] and ARGV[3] the rate (emission interval and capacity, µs).
# 'hit': charge KEYS[1] one request if it has room. With a bearer claim, KEYS[2] is the address
#   bucket, KEYS[3] the key's learnt proof and ARGV[4] the presented proof: KEYS[1] (the key's
#   bucket) is charged only when the proofs are equal, else KEYS[2] is.
#   Returns {allowed, remaining, µs until the bucket is full again, µs until a retry can pass,
#   whether the key's own bucket was the one charged}.
# 'learn': a request charged to the address (KEYS[2]) turned out to carry a valid key: remember
#   its proof ARGV[4] for ARGV[5] ms in KEYS[3], charge the key's bucket KEYS[1] and give the
#   address back its request. Returns 1.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, tat, 'PX', math.ceil((tat - now) / 1000))
  else
    redis.call('DEL', key)
  end
end
if ARGV[1] == 'learn' then
  redis.call('SET', KEYS[3], ARGV[4], 'PX', tonumber(ARGV[5]))
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  store(KEYS[1], tat + interval)
  local address_tat = tonumber(redis.call('GET', KEYS[2]))
  if address_tat then store(KEYS[2], address_tat - interval) end
  return 1
end
local key = KEYS[1]
local own = 1
if #KEYS == 3 and redis.call('GET', KEYS[3]) ~= ARGV[4] then
  key = KEYS[2]
  own = 0
end
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local allow_at = tat + interval - capacity
local allowed = 0
local retry = 0
if allow_at <= now then
  allowed = 1
  tat = tat + interval
  store(key, tat)
else
  retry = allow_at - now
end
local remaining = math.floor((now + capacity - tat) / interval)
if remaining < 0 then remaining = 0 end
return {allowed, remaining, tat - now, retry, own}
"""


@dataclass(frozen=True)
class Rate:
    limit: int
    window: int  # seconds

    @classmethod
    def parse(cls, name: str, text: str) -> Rate:
        try:
            limit, window = (int(part) for part in text.split("/"))
        except ValueError:
            raise ImproperlyConfigured(f"{name}={text!r} is not a rate like '600/60' (requests/seconds)") from None
        if limit < 1 or window < 1:
            raise ImproperlyConfigured(f"{name}={text!r}: requests and seconds must both be at least 1")
        return cls(limit, window)

    @property
    def interval_us(self) -> int:
        return max(1, round(self.window * 1_000_000 / self.limit))

    @property
    def capacity_us(self) -> int:
        # limit * interval, not the window: integer arithmetic in the script stays exact.
        return self.limit * self.interval_us


@dataclass(frozen=True)
class Charge:
    """Where one request is charged: `bucket`, or for a bearer key whose proof the script does not
    hold, `address_bucket` instead (`prefix` and `proof` come from RATELIMIT_BEARER_CLAIM)."""

    bucket: str
    rate: Rate
    prefix: str | None = None
    proof: str | None = None
    address_bucket: str | None = None

    @property
    def proof_key(self) -> str:
        return f"proof:{self.prefix}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until a refused request may pass
    own_bucket: bool = True  # False: a bearer claim was charged to its address


class RedisUnavailable(Exception):
    pass


class ScriptConnections(RedisConnections):
    """The limiter's own small pool of Redis connections (project.db.redis), and its one
    script call on them."""

    def __init__(self, url: str, *, size: int, timeout: float, script: str):
        super().__init__(url, size=size, timeout=timeout)
        self.script = script
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()  # the name Redis knows it by

    def evalsha(self, keys: list[str], args: list[int]) -> list:
        """Run the script; loads it (EVAL) when Redis does not know it, e.g. after a restart."""
        with self.connection() as connection:
            try:
                return call(connection, "EVALSHA", self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return call(connection, "EVAL", self.script, len(keys), *keys, *args)


class RateLimiter:
    """The limiter's settings, its Redis client and its script; one per process."""

    def __init__(self):
        self.enabled = settings.RATELIMIT_ENABLED
        self.rates = {}
        for group in GROUPS:
            name = f"RATELIMIT_{group.upper()}"
            self.rates[group] = Rate.parse(name, getattr(settings, name))
        self.trusted_proxies = settings.RATELIMIT_TRUSTED_PROXIES
        if self.trusted_proxies < 0:
            raise ImproperlyConfigured("RATELIMIT_TRUSTED_PROXIES must be 0 or more")
        self.auth_paths = tuple(settings.RATELIMIT_AUTH_PATHS)
        self.admin_login_path = settings.RATELIMIT_ADMIN_LOGIN_PATH
        self.exempt_paths = frozenset(settings.RATELIMIT_EXEMPT_PATHS)
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/") if settings.STATIC_URL else None
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        self.bearer_claim = import_string(settings.RATELIMIT_BEARER_CLAIM)
        self.key_prefix = f"{settings.CACHE_KEY_PREFIX}:rl:"
        # Its own small pool with short timeouts: a slow Redis costs a request 0.3 s at most,
        # and never takes connections from the cache. No retries: a retry would double that.
        self.redis = ScriptConnections(
            settings.RATELIMIT_REDIS_URL,
            size=POOL_SIZE,
            timeout=settings.RATELIMIT_REDIS_TIMEOUT,
            script=GCRA_SCRIPT,
        )
        self._failure_lock = threading.Lock()
        self._last_failure_log = -math.inf

    def close(self) -> None:
        self.redis.close()

    def group_for(self, request) -> str | None:
        path = request.path_info
        if path in self.exempt_paths or (self.static_prefix and path.startswith(self.static_prefix)):
            return None
        if request.method in SAFE_METHODS:
            return READ
        if path == self.admin_login_path:
            return ADMIN_LOGIN
        if path.startswith(self.auth_paths):
            return AUTH
        return WRITE

    def charge_for(self, request, group: str) -> Charge:
        """Where this request is charged."""
        rate = self.rates[group]
        address = client_address(request, self.trusted_proxies)
        address_bucket = f"{group}:addr:{address}"
        if group in FAIL_CLOSED:
            return Charge(address_bucket, rate)
        if is_api_request(request) and (claim := self.bearer_claim(request.META.get("HTTP_AUTHORIZATION", ""))):
            prefix, proof = claim
            return Charge(f"{group}:key:{prefix}", rate, prefix=prefix, proof=proof, address_bucket=address_bucket)
        user_id = _session_user_id(request, self.session_store)
        if user_id is not None:
            return Charge(f"{group}:user:{user_id}", rate)
        return Charge(address_bucket, rate)

    def hit(self, charge: Charge) -> Decision:
        """Charge one request (one script call)."""
        rate, prefix = charge.rate, self.key_prefix
        keys = [prefix + charge.bucket]
        args = ["hit", rate.interval_us, rate.capacity_us]
        if charge.prefix is not None:
            keys += [prefix + charge.address_bucket, prefix + charge.proof_key]
            args.append(charge.proof)
        try:
            allowed, remaining, reset_us, retry_us, own = self.redis.evalsha(keys, args)
        except (redis.RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc
        return Decision(
            allowed=bool(allowed),
            remaining=int(remaining) if allowed else 0,
            reset=math.ceil(int(reset_us) / 1_000_000),
            retry_after=max(1, math.ceil(int(retry_us) / 1_000_000)),
            own_bucket=bool(own),
        )

    def learn(self, charge: Charge) -> None:
        """The key `charge` claimed was accepted by DRF: remember its proof, and move this
        request's charge from the address to the key."""
        rate, prefix = charge.rate, self.key_prefix
        keys = [prefix + charge.bucket, prefix + charge.address_bucket, prefix + charge.proof_key]
        try:
            self.redis.evalsha(keys, ["learn", rate.interval_us, rate.capacity_us, charge.proof, PROOF_TTL_MS])
        except (redis.RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc

    def redis_failed(self, group: str, exc: Exception) -> None:
        REDIS_FAILURES.labels(group=group).inc()
        now = time.monotonic()
        with self._failure_lock:
            if now - self._last_failure_log < FAILURE_LOG_INTERVAL:
                return
            self._last_failure_log = now
        logger.warning("rate limiter cannot reach Redis (%s); read/write pass, auth and admin login refused", exc)


def client_address(request, trusted_proxies: int) -> str:
    """The caller's address: REMOTE_ADDR, or the entry `trusted_proxies` hops from the right of
    X-Forwarded-For (entries further left were written by the client and prove nothing)."""
    address = request.META.get("REMOTE_ADDR", "")
    if trusted_proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if forwarded:
            address = forwarded[-min(trusted_proxies, len(forwarded))]
    return _bucket_address(address)


def _bucket_address(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        # One IPv6 subscriber usually holds a whole /64: count it as one address.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _session_user_id(request, session_store) -> str | None:
    """The signed-in user's id from the session, or None. One indexed read, whose session
    SessionMiddleware (below) then takes over instead of reading the row again."""
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    session = session_store(session_key)
    try:
        user_id = session.get(SESSION_KEY)
    except DatabaseError:
        return None  # the address still limits the request; the session middleware reports the outage
    if session.session_key is not None:  # None: no such session; SessionMiddleware handles that as ever
        # Read for the limiter, not by the view: only the view's own access adds `Vary: Cookie`.
        session.accessed = False
        request.ratelimit_session = session
    return user_id


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's SessionMiddleware, starting from the session the rate limiter already read for
    this request's cookie (same engine), so a signed-in browser's session row is read once."""

    def process_request(self, request):
        session = request.__dict__.pop("ratelimit_session", None)
        if isinstance(session, self.SessionStore):
            request.session = session
        else:
            super().process_request(request)


_limiter = PerProcess(RateLimiter, RateLimiter.close)


def limiter() -> RateLimiter:
    return _limiter.get()


@receiver(setting_changed, dispatch_uid="stockroom.ratelimit.reset")
def _reset_on_setting_change(setting, **kwargs):
    if setting.startswith("RATELIMIT_") or setting in {"CACHE_KEY_PREFIX", "STATIC_URL"}:
        _limiter.reset()


def _policy_header(group: str, rate: Rate) -> str:
    return f'"{group}";q={rate.limit};w={rate.window}'


def _state_header(group: str, decision: Decision) -> str:
    return f'"{group}";r={decision.remaining};t={decision.reset}'


def _refusal(request, status: int, code: str, detail: str) -> HttpResponse:
    if is_api_request(request):
        return JsonResponse(envelope(code, detail), status=status)
    return HttpResponse(detail + "\n", status=status, content_type="text/plain; charset=utf-8")


class RateLimitMiddleware:
    """Runs right after the request id is set, before sessions, CSRF or the view: a refused
    request costs one Redis call (plus the session read for a signed-in browser, which an
    allowed request then reuses)."""

    def __init__(self, get_response):
        self.get_response = get_response
        limiter()  # a malformed rate stops the process at start-up, not at the first request

    def __call__(self, request):
        rl = limiter()
        group = rl.group_for(request) if rl.enabled else None
        if group is None:
            return self.get_response(request)
        rate = rl.rates[group]
        charge = rl.charge_for(request, group)
        try:
            decision = rl.hit(charge)
        except RedisUnavailable as exc:
            rl.redis_failed(group, exc)
            if group in FAIL_CLOSED:
                response = _refusal(
                    request, 503, "rate_limiter_unavailable", "Sign-in is unavailable for a moment; retry shortly."
                )
                response["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
            else:
                response = self.get_response(request)
            response["RateLimit-Policy"] = _policy_header(group, rate)
            return response

        if decision.allowed:
            response = self.get_response(request)
            # DRF sets request.auth on the Django request once it has accepted a key.
            if not decision.own_bucket and getattr(getattr(request, "auth", None), "prefix", None) == charge.prefix:
                try:
                    rl.learn(charge)
                except RedisUnavailable as exc:
                    rl.redis_failed(group, exc)
        else:
            LIMITED.labels(group=group).inc()
            response = _refusal(
                request, 429, "rate_limited", f"Too many requests; retry in {decision.retry_after} seconds."
            )
            response["Retry-After"] = str(decision.retry_after)
        response["RateLimit-Policy"] = _policy_header(group, rate)
        response["RateLimit"] = _state_header(group, decision)
        return response
