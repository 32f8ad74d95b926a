"""The mixed scenarios of `make bench`: shoppers browse while others order, on one server.

A shop browses and sells at the same time. Each scenario pairs a reader (wrk on a catalogue
address) with an orderer (wrk placing orders), each with its own connection count, the orderer
either as fast as its connections go or paced to a rate of orders per second, and each round
runs the reader alone, then both at once (two wrk processes started together), then the orderer
alone: each side's run alone is next to the run together, since this host's speed drifts by 15% or
more from one 8-second window to another, and a ratio of two windows far apart measures that drift.
It reports, over the rounds (median, min-max):
- the reader's req/s while orders flow as a ratio to the reader alone;
- the orders' req/s while reads flow as a ratio to the orders alone;
- their sum: the share of the machine the two use together against apart (1.0: nothing lost to
  each other; 0.5: together they get half of what each gets alone);
- the catalogue cache's hit ratio over the mixed run, from the server's /metrics (django-prometheus's
  cache counters, which every catalogue read bumps once: inventory.cache).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Mixed:
    name: str
    readers: str  # a Scenario name of tests/bench/__main__.scenarios
    reader_connections: int
    writers: str
    writer_connections: int


# The pace of the paced list scenario: the rate at which the 2 orderers of the list scenario ran
# when browsing while selling was first measured, every order then emptying the list's cache. Unpaced,
# the same 2 connections now order more than twice as fast, and what the readers keep then says
# how the machine splits between the two sides more than what orders do to the catalogue.
PACED_ORDERS_PER_SECOND = 60
# orders_uniform at that pace (tests/bench/__main__.run_mixed makes it).
PACED_ORDERS = f"orders_uniform_{PACED_ORDERS_PER_SECOND}"

MIXED = (
    # The list while 2 connections order uniformly, as fast as they go, and paced to 60 orders/s;
    # one product's page while 8 connections order that very product.
    Mixed("catalogue_while_ordering", "catalogue_cached", 12, "orders_uniform", 2),
    Mixed("catalogue_while_ordering_60", "catalogue_cached", 12, PACED_ORDERS, 2),
    Mixed("hot_product_while_ordering", "product_hot", 8, "orders_hot", 8),
)


@dataclass
class MixedRound:
    readers_alone: float
    writers_alone: float
    readers_mixed: float
    writers_mixed: float
    cache_gets: float
    cache_hits: float

    @property
    def reader_ratio(self) -> float:
        return self.readers_mixed / self.readers_alone if self.readers_alone else 0.0

    @property
    def writer_ratio(self) -> float:
        return self.writers_mixed / self.writers_alone if self.writers_alone else 0.0

    @property
    def share(self) -> float:
        return self.reader_ratio + self.writer_ratio

    @property
    def hit_ratio(self) -> float:
        return self.cache_hits / self.cache_gets if self.cache_gets else 0.0


def cache_counters(metrics_text: str) -> tuple[float, float]:
    """(catalogue cache reads, hits) from a /metrics page."""
    gets = hits = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("backend") != "redis":
                continue
            if sample.name == "django_cache_get_total":
                gets += sample.value
            elif sample.name == "django_cache_get_hits_total":
                hits += sample.value
    return gets, hits


def run_round(mixed: Mixed, run: Callable[[str, int], float], metrics: Callable[[], str]) -> MixedRound:
    """`run(scenario name, connections)` runs wrk once and gives its 2xx req/s: the readers alone,
    both at once, then the orderers alone."""
    readers_alone = run(mixed.readers, mixed.reader_connections)
    gets_before, hits_before = cache_counters(metrics())
    results: dict[str, float] = {}

    def one(name: str, connections: int) -> None:
        results[name] = run(name, connections)

    threads = [
        threading.Thread(target=one, args=(mixed.readers, mixed.reader_connections)),
        threading.Thread(target=one, args=(mixed.writers, mixed.writer_connections)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gets_after, hits_after = cache_counters(metrics())
    writers_alone = run(mixed.writers, mixed.writer_connections)
    return MixedRound(
        readers_alone=readers_alone,
        writers_alone=writers_alone,
        readers_mixed=results[mixed.readers],
        writers_mixed=results[mixed.writers],
        cache_gets=gets_after - gets_before,
        cache_hits=hits_after - hits_before,
    )


def _cell(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(results: dict[str, list[MixedRound]]) -> str:
    lines = [
        "| mixed (median, min-max over rounds) | readers alone req/s | readers while ordering | readers ratio "
        "| orders alone req/s | orders while reading | orders ratio | share of the machine | cache hit ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mixed in MIXED:
        rounds = results.get(mixed.name)
        if not rounds:
            continue
        cells = [
            f"{mixed.name} ({mixed.readers} x{mixed.reader_connections}, {mixed.writers} x{mixed.writer_connections})",
            _cell([r.readers_alone for r in rounds], ",.0f"),
            _cell([r.readers_mixed for r in rounds], ",.0f"),
            _cell([r.reader_ratio for r in rounds], ".2f"),
            _cell([r.writers_alone for r in rounds], ",.0f"),
            _cell([r.writers_mixed for r in rounds], ",.0f"),
            _cell([r.writer_ratio for r in rounds], ".2f"),
            _cell([r.share for r in rounds], ".2f"),
            _cell([r.hit_ratio for r in rounds], ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
