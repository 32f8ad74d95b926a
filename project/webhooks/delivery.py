"""One attempt of one delivery, and one round of the dispatcher (called by project.webhooks.tasks).

An attempt is three steps, and only the first and the last touch the database, each in its own
short transaction (DESIGN.md §9: no lock is held while an effect runs):

1. claim (`services.delivery_claim`): the delivery becomes `delivering` with a claim that lasts the
   attempt's timeout plus WEBHOOK_CLAIM_MARGIN_SECONDS; skipped if it is not due, claimed by a live
   attempt, behind an older delivery of its ordering key, or its endpoint is off or at its cap;
2. sign and POST (project.webhooks.signing, project.webhooks.http): no transaction, no lock, the
   whole attempt bounded by WEBHOOK_TIMEOUT_SECONDS;
3. record (`services.delivery_record`): succeeded, a retry after a backoff, or failed.

A worker killed during step 2 leaves the claim to run out; the dispatcher then hands the delivery
out again and it is sent again with the same webhook-id (at least once). Without such a crash a
delivery is sent once per attempt it records.
"""

import logging
import time
from typing import Literal

from django.conf import settings

from project.webhooks import http, services, signing
from project.webhooks.metrics import ATTEMPTS, BACKLOG

logger = logging.getLogger("stockroom.webhooks")

Outcome = Literal["skipped", "succeeded", "retry", "failed", "lost"]


def claim_seconds() -> float:
    """How long an attempt's claim lasts: the attempt's timeout plus the margin for the rest."""
    return settings.WEBHOOK_TIMEOUT_SECONDS + settings.WEBHOOK_CLAIM_MARGIN_SECONDS


def deliver(delivery_id: int) -> Outcome:
    """Make one attempt of a delivery if it can be claimed (a chain of one); returns what became of
    it: skipped (not claimed), succeeded, retry (scheduled), failed (no retry left), lost
    (attempted, but its claim had been taken over when the attempt was recorded)."""
    outcomes, _ = deliver_chain(delivery_id, limit=1)
    return outcomes[0]


def deliver_chain(delivery_id: int, *, limit: int) -> tuple[list[Outcome], bool]:
    """Deliver this delivery, then keep its endpoint's slot: claim the endpoint's next due delivery
    (services.delivery_next: the next of the same ordering key once this one is done, or another
    key's) and deliver it, up to `limit` deliveries in all. A backlog to one endpoint then flows
    without a Celery message and a dispatcher round per delivery. Every claim checks the cap and
    the head of line again, as a claim of the dispatcher's hand-out does. Returns the outcomes and
    whether the chain stopped at `limit` with more due (then the dispatcher should run)."""
    outcomes: list[Outcome] = []
    while True:
        claimed = services.delivery_claim(delivery_id=delivery_id, lease_seconds=claim_seconds())
        if claimed is None:
            if not outcomes:
                logger.info("webhook delivery %s skipped (not due, claimed, waiting its turn or gone)", delivery_id)
            outcomes.append("skipped")
            return outcomes, False
        outcomes.append(_deliver_claimed(claimed))
        following = services.delivery_next(endpoint_id=claimed.endpoint_id)
        if following is None or len(outcomes) >= limit:
            return outcomes, following is not None
        delivery_id = following


def _deliver_claimed(claimed: services.ClaimedDelivery) -> Outcome:
    status, error, duration_ms = _attempt(claimed)
    outcome = services.delivery_record(claimed=claimed, status=status, error=error, duration_ms=duration_ms)
    result: Outcome = {"succeeded": "succeeded", "pending": "retry", "failed": "failed"}.get(outcome.state, "lost")
    if result != "lost":
        ATTEMPTS.labels(outcome=result).inc()
    log = logger.info if result == "succeeded" else logger.warning
    log(
        "webhook delivery %s attempt %s to endpoint %s: %s (%s)",
        claimed.id,
        claimed.attempt,
        claimed.endpoint_id,
        result,
        status if status is not None else error,
        extra={"delivery_id": claimed.id, "endpoint_id": claimed.endpoint_id, "webhook_id": claimed.webhook_id},
    )
    return result


def _attempt(claimed: services.ClaimedDelivery) -> tuple[int | None, str, int | None]:
    """Sign and POST once: (status, error for the record, duration in ms). Never raises: whatever
    goes wrong is this attempt's error, recorded and retried like a receiver's failure."""
    started = time.monotonic()
    body = signing.event_body(type=claimed.type, created_at=claimed.created_at, payload=claimed.payload)
    try:
        headers = signing.signed_headers(
            secrets=claimed.secret, webhook_id=claimed.webhook_id, timestamp=int(time.time()), body=body
        )
        result = http.post(claimed.url, body=body, headers=headers)
    except signing.InvalidSecret as exc:
        return None, f"the endpoint's secret is unusable: {exc}", None
    except http.DeliveryError as exc:
        return None, str(exc), int((time.monotonic() - started) * 1000)
    except Exception as exc:  # a bug here must not leave the delivery claimed until the claim runs out
        logger.exception("webhook delivery %s: attempt failed unexpectedly", claimed.id)
        return None, f"internal error: {type(exc).__name__}", int((time.monotonic() - started) * 1000)
    error = ""
    if not 200 <= result.status < 300:
        excerpt = result.body[:300].decode("utf-8", errors="replace")
        error = f"HTTP {result.status}" + (f": {excerpt}" if excerpt.strip() else "")
    return result.status, error, result.duration_ms


def dispatch_round() -> list[int]:
    """One dispatcher round: the deliveries handed out now (to publish, one `webhooks.deliver` each),
    at most WEBHOOK_DISPATCH_BATCH. Also refreshes the deliveries gauge when it is due."""
    try:
        BACKLOG.measure_if_due(services.deliveries_count_by_state, settings.WEBHOOK_BACKLOG_SECONDS)
    except Exception:  # the gauge is not worth a round
        logger.exception("webhook deliveries not counted")
    return services.deliveries_dispatch(limit=settings.WEBHOOK_DISPATCH_BATCH)
