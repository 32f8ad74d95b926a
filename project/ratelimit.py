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
API key prefix on /api/ (a bearer key), else by the signed-in user's id (read from the session),
else by client address. A bearer prefix is read before authentication, so it is a claim: a
request whose claim DRF does not confirm is charged afterwards to a per-address `unverified`
bucket, and every claimed-key request first needs room there. So invented prefixes get no more
than the address would, while real keys behind a shared address keep their own budgets.

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
from prometheus_client import Counter

from project.errors import envelope
from project.redis_connections import PerProcess, RedisConnections, call
from users.keys import split_prefix

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

# KEYS: buckets; ARGV: per bucket (emission interval µs, capacity µs, cost 0 or 1).
# A request passes only if every bucket has room for one more; then buckets with cost 1 are
# charged. Cost 0 is a look without charging (the per-address `unverified` bucket).
# Returns {allowed, remaining in KEYS[1], µs until KEYS[1] is full again, µs until a retry can pass}.
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local allowed = 1
local retry = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i * 3 - 2])
  local capacity = tonumber(ARGV[i * 3 - 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat + interval - capacity
  if allow_at > now then
    allowed = 0
    if allow_at - now > retry then retry = allow_at - now end
  end
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do
    if tonumber(ARGV[i * 3]) == 1 then
      tats[i] = tats[i] + tonumber(ARGV[i * 3 - 2])
      redis.call('SET', key, tats[i], 'PX', math.ceil((tats[i] - now) / 1000))
    end
  end
end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local remaining = math.floor((now + capacity - tats[1]) / interval)
if remaining < 0 then remaining = 0 end
return {allowed, remaining, tats[1] - now, retry}
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
class Decision:
    allowed: bool
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until a refused request may pass


class RedisUnavailable(Exception):
    pass


class ScriptConnections(RedisConnections):
    """The limiter's own small pool of Redis connections (project.redis_connections), and its one
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

    def buckets_for(self, request, group: str) -> tuple[list[tuple[str, Rate, int]], str | None]:
        """The buckets this request is charged to, and the key prefix it claims (if any)."""
        rate = self.rates[group]
        address = client_address(request, self.trusted_proxies)
        if group in FAIL_CLOSED:
            return [(f"{group}:addr:{address}", rate, 1)], None
        if request.path_info.startswith("/api/") and (prefix := _claimed_key_prefix(request)):
            return [(f"{group}:key:{prefix}", rate, 1), (f"{group}:unverified:{address}", rate, 0)], prefix
        user_id = _session_user_id(request, self.session_store)
        if user_id is not None:
            return [(f"{group}:user:{user_id}", rate, 1)], None
        return [(f"{group}:addr:{address}", rate, 1)], None

    def hit(self, buckets: list[tuple[str, Rate, int]]) -> Decision:
        """Charge a request to `buckets` (key, rate, cost) in one script call; the first is reported."""
        args = []
        for _, rate, cost in buckets:
            args += [rate.interval_us, rate.capacity_us, cost]
        try:
            allowed, remaining, reset_us, retry_us = self.redis.evalsha(
                [self.key_prefix + key for key, _, _ in buckets], args
            )
        except (redis.RedisError, OSError) as exc:
            raise RedisUnavailable(str(exc)) from exc
        return Decision(
            allowed=bool(allowed),
            remaining=int(remaining) if allowed else 0,
            reset=math.ceil(int(reset_us) / 1_000_000),
            retry_after=max(1, math.ceil(int(retry_us) / 1_000_000)),
        )

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


def _claimed_key_prefix(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    keyword, _, key = header.partition(" ")
    if keyword.lower() != "bearer":
        return None
    return split_prefix(key.strip())


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
    if request.path_info.startswith("/api/"):
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
        buckets, claimed_prefix = rl.buckets_for(request, group)
        try:
            decision = rl.hit(buckets)
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
            if claimed_prefix and getattr(getattr(request, "auth", None), "prefix", None) != claimed_prefix:
                self._charge_unverified(rl, group, buckets[1])
        else:
            LIMITED.labels(group=group).inc()
            response = _refusal(
                request, 429, "rate_limited", f"Too many requests; retry in {decision.retry_after} seconds."
            )
            response["Retry-After"] = str(decision.retry_after)
        response["RateLimit-Policy"] = _policy_header(group, rate)
        response["RateLimit"] = _state_header(group, decision)
        return response

    @staticmethod
    def _charge_unverified(rl: RateLimiter, group: str, bucket: tuple[str, Rate, int]) -> None:
        """The key this request claimed was not accepted: count it against its address."""
        key, rate, _ = bucket
        try:
            rl.hit([(key, rate, 1)])
        except RedisUnavailable as exc:
            rl.redis_failed(group, exc)
