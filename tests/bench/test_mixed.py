"""The mixed scenarios' arithmetic and their reading of /metrics (the scenarios themselves run in `make bench`)."""

import threading

from prometheus_client import CollectorRegistry, Counter, generate_latest

from tests.bench.mixed import MIXED, MixedRound, cache_counters, run_round


def test_cache_counters_read_the_redis_backend_series_of_a_metrics_page():
    registry = CollectorRegistry()
    gets = Counter("django_cache_get", "reads", ["backend"], registry=registry)
    hits = Counter("django_cache_get_hits", "hits", ["backend"], registry=registry)
    gets.labels(backend="redis").inc(40)
    hits.labels(backend="redis").inc(38)
    gets.labels(backend="locmem").inc(7)

    assert cache_counters(generate_latest(registry).decode()) == (40.0, 38.0)


def test_a_round_runs_the_readers_alone_both_at_once_then_the_orderers_alone_counting_around_the_mixed_run():
    pair = MIXED[0]
    running, overlapped = set(), threading.Event()
    lock = threading.Lock()
    alone = {pair.readers: 1000.0, pair.writers: 200.0}
    mixed = {pair.readers: 750.0, pair.writers: 150.0}
    calls = []

    def run(name, connections):
        with lock:
            calls.append((name, connections))
            together = len([call for call in calls if call != "metrics"]) in (2, 3)
            running.add(name)
            if len(running) == 2:
                overlapped.set()
        if together:
            assert overlapped.wait(5), "the two sides of the mixed run did not run at the same time"
        with lock:
            running.discard(name)
        return (mixed if together else alone)[name]

    pages = iter(
        [
            'django_cache_get_total{backend="redis"} 100.0\ndjango_cache_get_hits_total{backend="redis"} 90.0\n',
            'django_cache_get_total{backend="redis"} 300.0\ndjango_cache_get_hits_total{backend="redis"} 288.0\n',
        ]
    )

    def metrics():
        calls.append("metrics")
        return next(pages)

    result = run_round(pair, run, metrics)

    readers, writers = (pair.readers, pair.reader_connections), (pair.writers, pair.writer_connections)
    assert calls[:2] == [readers, "metrics"]
    assert sorted(calls[2:4]) == sorted([readers, writers])
    assert calls[4:] == ["metrics", writers]
    assert result == MixedRound(1000.0, 200.0, 750.0, 150.0, 200.0, 198.0)
    assert (result.reader_ratio, result.writer_ratio, result.share, result.hit_ratio) == (0.75, 0.75, 1.5, 0.99)
