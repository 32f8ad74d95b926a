"""/metrics under gunicorn with two workers sums what every worker counted."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support import gunicorn_server

pytestmark = pytest.mark.slow

HEALTHZ_COUNTER = "django_http_requests_total_by_view_transport_method_total"
REQUESTS = 60


def _healthz_count(samples) -> float:
    return sum(s.value for s in samples if s.name == HEALTHZ_COUNTER and dict(s.labels).get("view") == "healthz")


def _scraped_healthz_count(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(HEALTHZ_COUNTER + "{") and 'view="healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def gunicorn_two_workers(tmp_path):
    multiproc = tmp_path / "prometheus"
    with gunicorn_server(
        tmp_path, WEB_CONCURRENCY="2", GUNICORN_THREADS="2", PROMETHEUS_MULTIPROC_DIR=str(multiproc)
    ) as base:
        yield base, multiproc


def test_metrics_sum_the_requests_of_both_workers(gunicorn_two_workers):
    base, multiproc = gunicorn_two_workers

    def hit(_):
        # A fresh connection each time, so both workers' accept loops get requests.
        with httpx.Client() as client:
            return client.get(f"{base}/healthz", timeout=5).status_code

    before = _scraped_healthz_count(httpx.get(f"{base}/metrics", timeout=5).text)  # the start-up probes
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(hit, range(REQUESTS)))
    scraped = httpx.get(f"{base}/metrics", timeout=5).text

    assert statuses == [200] * REQUESTS
    per_worker = [
        _healthz_count(
            s for metric in MultiProcessCollector._read_metrics([str(path)]).values() for s in metric.samples
        )
        for path in Path(multiproc).glob("counter_*.db")
    ]
    serving_workers = [count for count in per_worker if count > 0]
    assert len(serving_workers) == 2, per_worker
    assert sum(per_worker) == before + REQUESTS
    assert _scraped_healthz_count(scraped) == before + REQUESTS
