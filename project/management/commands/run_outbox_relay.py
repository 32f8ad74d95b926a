import signal
import threading

from django.core.management.base import BaseCommand

from project.outbox.metrics import serve_relay_metrics
from project.outbox.relay import OutboxRelay


class Command(BaseCommand):
    help = "Publish committed outbox messages to Celery until stopped (SIGTERM or Ctrl-C). Run by bin/relay."

    def add_arguments(self, parser):
        parser.add_argument("--broker-url", help="Publish to this broker instead of CELERY_BROKER_URL.")
        parser.add_argument("--batch-size", type=int, help="Rows claimed per transaction (OUTBOX_BATCH_SIZE).")
        parser.add_argument("--poll", type=float, help="Seconds between polls without a NOTIFY (OUTBOX_POLL_SECONDS).")

    def handle(self, *args, broker_url=None, batch_size=None, poll=None, **options):
        stop = threading.Event()
        # The loop checks the event at least every poll interval, so a stop takes about a second.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        serve_relay_metrics(stop)  # RELAY_METRICS_PORT: backlog (measured here, cached) and relay counters
        OutboxRelay(broker_url=broker_url, batch_size=batch_size, poll_seconds=poll, stop=stop).run()
