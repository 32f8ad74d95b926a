"""Webhook metrics, counted in the webhooks worker (bin/webhooks: one process, threads) and served
on its own metrics port (WORKER_METRICS_PORT, set from WEBHOOK_METRICS_PORT by bin/webhooks):

- stockroom_webhook_attempts_total{outcome}: attempts made, by what became of the delivery:
  succeeded, retry (a retry is scheduled), failed (no retry left);
- stockroom_webhook_endpoints_disabled_total: endpoints switched off for failing too long;
- stockroom_webhook_deliveries{state}: deliveries pending, delivering and failed, measured by the
  dispatcher at most every WEBHOOK_BACKLOG_SECONDS (never at scrape time: a scrape never waits for
  PostgreSQL), with stockroom_webhook_deliveries_measured_timestamp_seconds, so a dashboard tells a
  stale reading from an empty backlog.
"""

import threading
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

OUTCOMES = ("succeeded", "retry", "failed")
STATES = ("pending", "delivering", "failed")

ATTEMPTS = Counter("stockroom_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"])
ENDPOINTS_DISABLED = Counter(
    "stockroom_webhook_endpoints_disabled_total", "Webhook endpoints switched off after failing too long"
)
for _outcome in OUTCOMES:  # a zero series from the start: rate() and alerts work before the first attempt
    ATTEMPTS.labels(outcome=_outcome)


class DeliveryBacklog:
    """The last reading of deliveries by state, and the collector serving it."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self._registry = registry
        self._lock = threading.Lock()
        self.counts: dict[str, int] | None = None
        self.measured_at = 0.0
        self._measured_monotonic = float("-inf")
        self._registered = False

    def measure_if_due(self, read: Callable[[], dict[str, int]], interval: float) -> bool:
        """Read the counts (`read`, a database query) if the last reading is `interval` old; the
        first reading registers the collector. True if it read."""
        with self._lock:
            if time.monotonic() - self._measured_monotonic < interval:
                return False
            self._measured_monotonic = time.monotonic()  # one reader per interval, even if it fails
        counts = read()
        with self._lock:
            self.counts, self.measured_at = counts, time.time()
            register = not self._registered
            self._registered = True
        if register:
            self._registry.register(self)
        return True

    def collect(self):
        with self._lock:
            counts, measured_at = self.counts, self.measured_at
        if counts is None:
            return
        deliveries = GaugeMetricFamily(
            "stockroom_webhook_deliveries", "Webhook deliveries by state (last measurement)", labels=["state"]
        )
        for state in STATES:
            deliveries.add_metric([state], counts.get(state, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "stockroom_webhook_deliveries_measured_timestamp_seconds",
            "Unix time of the last measurement of webhook deliveries by state",
            value=measured_at,
        )


BACKLOG = DeliveryBacklog()
