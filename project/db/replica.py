"""Whether a catalogue read may go to the read replica now, and what the replica has replayed.

A read goes to the replica only when all of these hold, else to the primary:

- the replica answered its last probe (`unreachable` otherwise), and this request could take a
  connection to it (a refused connection or an open circuit breaker costs no wait here);
- it is at most REPLICA_MAX_LAG_SECONDS behind (`lag`), measured, not estimated: each probe reads
  the primary's WAL position and then the replica's replay position, and the replica holds every
  commit that finished before the newest probe whose primary position it has replayed. The lag is
  the age of that probe, so it keeps growing while the replica is stuck, probes or not;
- it has replayed the client's own last write (`behind_client`, project.db.own_writes), and the
  change a catalogue cache entry is being rebuilt for (`behind_change`, `at_least`), so a value
  older than the change that invalidated the entry is never stored under the new token;
- the client's own last write can be looked up (`client_unknown`: Redis did not answer).

Each refusal is counted in stockroom_replica_skipped_total{reason}, once per request and reason.

The probe runs in a thread of each process, at most every REPLICA_CHECK_INTERVAL_MS and only while
requests ask for the replica, on two connections of its own: under traffic a request reads what it
last saw and costs no extra round trip; only the first request after a quiet spell waits for a new
probe. A replica that stops answering mid-way through a request's statement fails that statement,
as the primary would.
"""

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from prometheus_client import Counter

from project.db import own_writes
from project.db.pooler import session_connection_params
from project.db.redis import PerProcess
from project.db.wal import PRIMARY_LSN_SQL, REPLAY_LSN_SQL

logger = logging.getLogger("stockroom.replica")

REPLICA = "replica"
SKIP_REASONS = ("lag", "unreachable", "behind_client", "behind_change", "client_unknown")
SKIPPED = Counter(
    "stockroom_replica_skipped_total",
    "Requests whose catalogue reads went to the primary instead of the replica, by reason (once per request and "
    "reason): lag (beyond REPLICA_MAX_LAG_SECONDS), unreachable, behind_client (the client's own last write not "
    "replayed yet), behind_change (a cache entry's invalidating change not replayed yet), client_unknown (Redis "
    "could not say what the client last wrote)",
    ["reason"],
)
for _reason in SKIP_REASONS:  # every series from the first scrape, at 0
    SKIPPED.labels(reason=_reason)

# The longest a request waits for a probe after a quiet spell (then it reads the primary).
PROBE_WAIT_SECONDS = 0.5

# The change a catalogue cache entry is being rebuilt for (inventory.cache): a WAL position.
_at_least: ContextVar[int] = ContextVar("replica_at_least", default=0)


class _RequestSeen:
    """What a request's catalogue reads met: the refusals counted, and whether one used the replica."""

    def __init__(self):
        self.skipped: set[str] = set()
        self.served = False


_seen: ContextVar[_RequestSeen | None] = ContextVar("replica_seen", default=None)  # None outside requests


def configured() -> bool:
    return REPLICA in settings.DATABASES


@contextlib.contextmanager
def at_least(lsn: int) -> Iterator[None]:
    """Within the block, catalogue reads use the replica only once it has replayed `lsn`."""
    token = _at_least.set(max(lsn, _at_least.get()))
    try:
        yield
    finally:
        _at_least.reset(token)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """A request: each refusal reason is counted at most once within it."""
    token = _seen.set(_RequestSeen())
    try:
        yield
    finally:
        _seen.reset(token)


@dataclass(frozen=True)
class ReplicaState:
    checked_at: float  # time.monotonic() of the probe; -inf before the first
    reachable: bool
    replay_lsn: int
    fresh_as_of: float  # the replica holds every commit that finished before this moment (monotonic)

    def lag(self, now: float) -> float:
        return now - self.fresh_as_of


UNKNOWN = ReplicaState(checked_at=-math.inf, reachable=False, replay_lsn=0, fresh_as_of=-math.inf)


class ReplicaMonitor:
    """What the replica has replayed and how far behind it is, as seen by this process's probe."""

    def __init__(self, *, interval: float, max_lag: float, clock=time.monotonic):
        self.interval = interval
        self.max_lag = max_lag
        self.clock = clock
        self._state = UNKNOWN
        self._samples: deque[tuple[float, int]] = deque()  # (moment, primary position then)
        self._wanted = threading.Event()
        self._probed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._connections: dict[str, psycopg.Connection] = {}
        self._params = {alias: session_connection_params(connections[alias]) for alias in (DEFAULT_DB_ALIAS, REPLICA)}

    def state(self) -> ReplicaState:
        """The last probe's answer, asking for a new probe if it is older than the interval. After
        a quiet spell (no probe for half the bound, or none yet) the old answer says little (the
        lag it implies only grows), so this waits for the new one, at most PROBE_WAIT_SECONDS."""
        state = self._state
        age = self.clock() - state.checked_at
        if age >= self.interval:
            self._wake()
            if age >= self.max_lag / 2:
                with self._probed:
                    self._probed.wait_for(lambda: self._state is not state, timeout=PROBE_WAIT_SECONDS)
                state = self._state
        return state

    def unreachable(self) -> None:
        """A request could not connect: no request tries again before the next probe succeeds."""
        with self._probed:
            self._state = replace(self._state, reachable=False)
        self._wake()

    def close(self) -> None:
        self._stopping.set()
        self._wanted.set()
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                conn.close()

    def _wake(self) -> None:
        if self._thread is None:
            with self._thread_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="replica-monitor", daemon=True)
                    self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping.is_set():
                return
            started = self.clock()
            try:
                state = self.probe()
            except Exception:  # a thread that died would leave every read on the primary, silently
                logger.exception("replica probe failed")
                state = replace(self._state, checked_at=started, reachable=False)
            with self._probed:
                self._state = state
                self._probed.notify_all()
            # At most one probe per interval, however many requests ask.
            self._stopping.wait(max(self.interval - (self.clock() - started), 0))

    def probe(self) -> ReplicaState:
        """Read the primary's position, then the replica's replay position, and work out the lag."""
        now = self.clock()
        try:
            primary = self._position(DEFAULT_DB_ALIAS, PRIMARY_LSN_SQL)
        except psycopg.Error:
            return replace(self._state, checked_at=now)  # nothing learnt about the replica
        try:
            replayed = self._position(REPLICA, REPLAY_LSN_SQL)
        except psycopg.Error as exc:
            if self._state.reachable:
                logger.warning("replica unreachable, catalogue reads go to the primary: %s", exc)
            return replace(self._state, checked_at=now, reachable=False)
        if not self._state.reachable and self._state.checked_at > -math.inf:
            logger.warning("replica reachable again")
        # Samples older than the bound can only show a lag beyond it: dropped.
        self._samples.append((now, primary))
        while self._samples and self._samples[0][0] < now - self.max_lag:
            self._samples.popleft()
        fresh_as_of = self._state.fresh_as_of
        while self._samples and self._samples[0][1] <= replayed:
            fresh_as_of = max(fresh_as_of, self._samples.popleft()[0])
        return ReplicaState(checked_at=now, reachable=True, replay_lsn=replayed, fresh_as_of=fresh_as_of)

    def _position(self, alias: str, sql: str) -> int:
        conn = self._connections.get(alias)
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(**self._params[alias], autocommit=True)
                self._connections[alias] = conn
            return int(conn.execute(sql).fetchone()[0])
        except psycopg.Error:
            self._connections.pop(alias, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            raise


_monitor = PerProcess(
    lambda: ReplicaMonitor(
        interval=settings.REPLICA_CHECK_INTERVAL_MS / 1000, max_lag=settings.REPLICA_MAX_LAG_SECONDS
    ),
    ReplicaMonitor.close,
)


def monitor() -> ReplicaMonitor:
    return _monitor.get()


def served_by_replica() -> bool:
    """Whether a catalogue read of this request may have gone to the replica (outside a request:
    whether there is one). What it read is as old as the replica, whatever the time it was read."""
    seen = _seen.get()
    return configured() if seen is None else seen.served


def _skip(reason: str) -> str:
    seen = _seen.get()
    if seen is None or reason not in seen.skipped:
        if seen is not None:
            seen.skipped.add(reason)
        SKIPPED.labels(reason=reason).inc()
    return DEFAULT_DB_ALIAS


def choose() -> str:
    """The alias for a catalogue read outside any transaction, in a request that has not written."""
    watcher = monitor()
    state = watcher.state()
    if state.checked_at == -math.inf:
        return DEFAULT_DB_ALIAS  # the process's first probe did not answer in time: nothing known yet
    if not state.reachable:
        return _skip("unreachable")
    # The most particular reason first: a client's own write, then the bound.
    if _at_least.get() > state.replay_lsn:
        return _skip("behind_change")
    own = own_writes.current()
    if own is own_writes.UNKNOWN:
        return _skip("client_unknown")
    if own is not None and own.lsn > state.replay_lsn:
        return _skip("behind_client")
    if state.lag(watcher.clock()) > watcher.max_lag:
        return _skip("lag")
    try:
        # With the pool, a healthy connection is lent without a round trip; none, or a refused one
        # (or the breaker open), fails here instead of in the read.
        connections[REPLICA].ensure_connection()
    except DatabaseError:
        watcher.unreachable()
        return _skip("unreachable")
    seen = _seen.get()
    if seen is not None:
        seen.served = True
    return REPLICA
