"""The two-node scenario of `make bench`: orders through HAProxy to two web nodes, against HAProxy to
one node with as many gunicorn workers, and against that node reached directly.

On one 2-core machine a second node adds no CPU, so the claim is the ratio: the same four
gunicorn workers (two nodes of two, or one node of four, each worker with GUNICORN_THREADS
threads and a pooled connection per thread) behind the same HAProxy (ops/haproxy/stockroom.cfg,
the file `make two-nodes` runs). Two nodes cost what a second master, a second set of pools and
HAProxy's balancing cost; the one-node layout with and without HAProxy gives the hop's own cost.

All three layouts run at once (an idle one costs memory only) and every round measures each of
them once, in an order that rotates from round to round, so a slow spell of the shared host falls
on all of them alike (DESIGN.md §12). Reported: the median over rounds with its spread (min-max),
and the ratios taken within each round.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.whole_shop import median_spread

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = "/usr/sbin/haproxy"
HAPROXY_CONFIG = ROOT / "ops" / "haproxy" / "stockroom.cfg"
LAYOUTS = ("two_nodes", "one_node", "one_node_direct")
WORKERS = 4  # gunicorn workers in every layout
# The two-node run's pool sizes (bin/two-nodes): a connection per gunicorn thread.
NODE_ENV = {"GUNICORN_THREADS": "4", "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "4", "RATELIMIT_TRUSTED_PROXIES": "1"}


@dataclass
class Round:
    number: int
    # scenario -> layout -> wrk's result (rps, p50_ms, p99_ms, errors, ...)
    runs: dict[str, dict[str, dict]] = field(default_factory=dict)

    def ratio(self, scenario: str, top: str, bottom: str) -> float:
        below = self.runs[scenario][bottom]["rps"]
        return self.runs[scenario][top]["rps"] / below if below else 0.0


@contextlib.contextmanager
def haproxy(port: int, node_ports: list[int], log: Path) -> Iterator[subprocess.Popen]:
    """HAProxy in the foreground on `port` in front of the gunicorns on `node_ports` (one or two)."""
    env = dict(os.environ, STOCKROOM_LISTEN=f"127.0.0.1:{port}", STOCKROOM_NODE1=f"127.0.0.1:{node_ports[0]}")
    env.pop("STOCKROOM_NODE2", None)
    if len(node_ports) > 1:
        env["STOCKROOM_NODE2"] = f"127.0.0.1:{node_ports[1]}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(HAPROXY_CONFIG)], cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_every_node_is_up(port, len(node_ports), proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_until_every_node_is_up(port: int, nodes: int, proc: subprocess.Popen) -> None:
    import urllib.request

    wanted = {f"web{n}" for n in range(1, nodes + 1)}
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != wanted:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"HAProxy on {port} did not see {sorted(wanted)} up (saw {sorted(seen)})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                seen.add(response.headers["X-Stockroom-Node"])
        except OSError:
            time.sleep(0.2)


def run(
    *,
    env: dict,
    tmp: Path,
    scenarios: list,
    runs: int,
    warmup: Callable[[int, object], None],
    measure: Callable[[int, object], dict],
    gunicorn: Callable[[dict, Path], contextlib.AbstractContextManager],
    free_port: Callable[[], int],
) -> list[Round]:
    """Start the three layouts, warm each up on each scenario, then `runs` rounds. `gunicorn(env,
    folder)` starts one node (tests/bench's Gunicorn, which has a `port`); `measure(port, scenario)`
    is one wrk run against a port; `warmup(port, scenario)` one unmeasured run."""
    folder = tmp / "two-nodes"
    folder.mkdir(parents=True, exist_ok=True)
    halves = dict(env, **NODE_ENV, WEB_CONCURRENCY=str(WORKERS // 2))
    whole = dict(env, **NODE_ENV, WEB_CONCURRENCY=str(WORKERS))
    with contextlib.ExitStack() as stack:
        node_a = stack.enter_context(gunicorn(halves, folder))
        node_b = stack.enter_context(gunicorn(halves, folder))
        single = stack.enter_context(gunicorn(whole, folder))
        two_port, one_port = free_port(), free_port()
        stack.enter_context(haproxy(two_port, [node_a.port, node_b.port], folder / "haproxy-two.log"))
        stack.enter_context(haproxy(one_port, [single.port], folder / "haproxy-one.log"))
        ports = {"two_nodes": two_port, "one_node": one_port, "one_node_direct": single.port}
        for scenario in scenarios:
            for layout in LAYOUTS:
                warmup(ports[layout], scenario)
        rounds = []
        for number in range(1, runs + 1):
            done = Round(number)
            order = LAYOUTS[number % len(LAYOUTS) :] + LAYOUTS[: number % len(LAYOUTS)]
            for scenario in scenarios:
                done.runs[scenario.name] = {layout: measure(ports[layout], scenario) for layout in order}
            rounds.append(done)
        return rounds


def report(rounds: list[Round]) -> str:
    """One row per scenario and layout (median over rounds, min-max), then the ratios per round."""
    lines = [
        f"| two nodes: {WORKERS} gunicorn workers in every layout | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for scenario in rounds[0].runs:
        for layout in LAYOUTS:
            results = [r.runs[scenario][layout] for r in rounds]
            lines.append(
                f"| {scenario}: {layout} | {median_spread([x['rps'] for x in results], ',.0f')}"
                f" | {median_spread([x['p50_ms'] for x in results], '.1f')}"
                f" | {median_spread([x['p99_ms'] for x in results], '.1f')}"
                f" | {sum(x['errors'] for x in results)} |"
            )
    lines += ["", "| ratio within each round (median, min-max) | value |", "|---|---:|"]
    for scenario in rounds[0].runs:
        for top, bottom in (("two_nodes", "one_node"), ("one_node", "one_node_direct")):
            ratios = [r.ratio(scenario, top, bottom) for r in rounds]
            lines.append(f"| {scenario}: {top} / {bottom} | {median_spread(ratios, '.2f')} |")
    return "\n".join(lines)


def as_json(rounds: list[Round]) -> list[dict]:
    return [{"round": r.number, "runs": r.runs} for r in rounds]
