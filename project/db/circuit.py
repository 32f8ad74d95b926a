"""A circuit breaker in front of new database connections, one per process.

After CIRCUIT_FAILURE_THRESHOLD failed connection attempts in a row the circuit opens: for
CIRCUIT_COOLDOWN_SECONDS every attempt fails at once (no 2 s wait per request while the database
is gone). Then it is half-open: one request probes; success closes the circuit, failure opens
it again. Requests that find the circuit open answer 503 (reads fall back to the cache).
"""

import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger("stockroom.circuit")


class CircuitOpen(Exception):
    """The database is considered down; no connection was attempted."""


class CircuitBreaker:
    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, name: str, *, threshold: int, cooldown: float, clock=time.monotonic):
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state = self.CLOSED
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self.clock() - self._opened_at >= self.cooldown:
                return self.HALF_OPEN
            return self._state

    def before_attempt(self) -> None:
        """Raise CircuitOpen unless this caller may try to connect (closed, or the half-open probe)."""
        with self._lock:
            if self._state == self.CLOSED:
                return
            if self.clock() - self._opened_at < self.cooldown or self._probing:
                raise CircuitOpen(f"{self.name}: circuit open, not trying to connect")
            self._state = self.HALF_OPEN
            self._probing = True  # exactly one probe; the others keep failing fast

    def succeeded(self) -> None:
        with self._lock:
            if self._state != self.CLOSED:
                logger.warning("%s: connection works again, circuit closed", self.name)
            self._state, self._failures, self._probing = self.CLOSED, 0, False

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._state == self.HALF_OPEN or self._failures >= self.threshold:
                if self._state != self.OPEN:
                    logger.warning("%s: %d failed connection attempts, circuit open", self.name, self._failures)
                self._state, self._opened_at = self.OPEN, self.clock()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(alias: str) -> CircuitBreaker:
    with _breakers_lock:
        if alias not in _breakers:
            _breakers[alias] = CircuitBreaker(
                f"database {alias}",
                threshold=settings.CIRCUIT_FAILURE_THRESHOLD,
                cooldown=settings.CIRCUIT_COOLDOWN_SECONDS,
            )
        return _breakers[alias]


def reset_breakers() -> None:
    with _breakers_lock:
        _breakers.clear()
