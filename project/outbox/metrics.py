"""The outbox backlog, measured by the relay process and served on its own metrics port.

A scrape must never wait for PostgreSQL, so the backlog is not counted at scrape time: a thread
of the relay measures it every OUTBOX_BACKLOG_SECONDS (two index scans per state) and keeps the
last good values. The collector serves those, with the age of the oldest message moving on by
the process clock between measurements, and with the time of the last good measurement, so a
dashboard can tell a stale backlog (database away) from an empty one:

- stockroom_outbox_messages{state}: pending, sent (published, not done yet), dead;
- stockroom_outbox_oldest_age_seconds{state}: age of the oldest pending / sent message;
- stockroom_outbox_backlog_measured_timestamp_seconds: Unix time of the last good measurement;
- stockroom_outbox_backlog_measure_failures_total: measurements that failed (database down).

`serve_relay_metrics()` is called by the relay command; it also serves the relay's counters
(stockroom_outbox_published_total, stockroom_outbox_relay_failures_total).
"""

import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily

from project.observability.tasks import serve_metrics

logger = logging.getLogger("stockroom.metrics")

STATES = ("pending", "sent", "dead")
AGED_STATES = ("pending", "sent")
# Counted where the work happens (the worker's processes), served on the worker's metrics port.
OUTBOX_TASK_DONE = Counter(
    "stockroom_outbox_done_total", "Outbox messages whose task ran and was recorded done", ["task"]
)
EMAILS_SENT = Counter("stockroom_emails_sent_total", "Emails handed to the mail server by outbox tasks")
MEASURE_FAILURES = Counter(
    "stockroom_outbox_backlog_measure_failures_total", "Backlog measurements that could not read the outbox"
)


class OutboxBacklog:
    """The last good measurement of the outbox, and the collector that serves it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[str, int] | None = None
        self.oldest_age: dict[str, float | None] = {}
        self.measured_monotonic = 0.0
        self.measured_at = 0.0

    def measure(self) -> None:
        """Read the outbox once (this thread's own connection). DatabaseError leaves the last values."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT state, count(*) FROM project_outboxmessage WHERE state = ANY(%s) GROUP BY state", [list(STATES)]
            )
            counts = dict.fromkeys(STATES, 0) | dict(cursor.fetchall())
            ages: dict[str, float | None] = {}
            for state in AGED_STATES:
                # The state index walks from the lowest id: ids grow with creation time.
                cursor.execute(
                    "SELECT extract(epoch FROM now() - created_at) FROM project_outboxmessage"
                    " WHERE state = %s ORDER BY state, id LIMIT 1",
                    [state],
                )
                row = cursor.fetchone()
                ages[state] = max(float(row[0]), 0.0) if row else None
        with self._lock:
            self.counts, self.oldest_age = counts, ages
            self.measured_monotonic, self.measured_at = time.monotonic(), time.time()

    def collect(self):
        with self._lock:
            counts, ages = self.counts, dict(self.oldest_age)
            since = time.monotonic() - self.measured_monotonic
            measured_at = self.measured_at
        if counts is None:
            return  # nothing measured yet: no series rather than a false zero
        messages = GaugeMetricFamily(
            "stockroom_outbox_messages", "Outbox messages by state (last measurement)", labels=["state"]
        )
        for state in STATES:
            messages.add_metric([state], counts.get(state, 0))
        yield messages
        oldest = GaugeMetricFamily(
            "stockroom_outbox_oldest_age_seconds",
            "Age of the oldest outbox message in this state (0 when there is none)",
            labels=["state"],
        )
        for state in AGED_STATES:
            age = ages.get(state)
            oldest.add_metric([state], 0.0 if age is None else age + since)
        yield oldest
        yield GaugeMetricFamily(
            "stockroom_outbox_backlog_measured_timestamp_seconds",
            "Unix time of the last good outbox backlog measurement",
            value=measured_at,
        )


def _measure_forever(backlog: OutboxBacklog, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            backlog.measure()
        except DatabaseError as exc:
            MEASURE_FAILURES.inc()
            logger.warning("outbox backlog not measured (%s); serving the last values", exc)
            connection.close()  # a broken connection is reopened on the next try
        except Exception:  # never let the metrics thread die: the relay goes on either way
            MEASURE_FAILURES.inc()
            logger.exception("outbox backlog measurement failed")
        stop.wait(interval)
    connection.close()


def serve_relay_metrics(stop: threading.Event | None = None) -> OutboxBacklog:
    """In the relay process: measure the backlog on a timer and serve metrics on RELAY_METRICS_PORT."""
    backlog = OutboxBacklog()
    REGISTRY.register(backlog)
    threading.Thread(
        target=_measure_forever,
        args=(backlog, settings.OUTBOX_BACKLOG_SECONDS, stop or threading.Event()),
        name="outbox-backlog",
        daemon=True,
    ).start()
    # One process: its own registry, whatever PROMETHEUS_MULTIPROC_DIR says (the backlog lives here).
    serve_metrics(port=settings.RELAY_METRICS_PORT, addr=settings.METRICS_BIND_ADDRESS, what="relay", registry=REGISTRY)
    return backlog
