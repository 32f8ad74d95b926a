"""The whole-shop scenario of `make bench`: orders with their side effects.

`make bench` measures gunicorn alone elsewhere; a shop also runs the outbox relay, a Celery worker
and beat, and each order's confirmation email goes outbox row -> relay -> broker -> task -> SMTP.
Here all of them run as `make run` starts them (bin/web's gunicorn, bin/worker, bin/relay,
bin/beat), with Django's SMTP backend sending to `SmtpSink`, a local SMTP server on a free port
that counts what it accepts by Message-ID.

Each round has two halves on the same processes:
- web only: the relay, the worker and beat are stopped (SIGSTOP) while orders are placed for the
  load time; the emails those orders queued are then marked done (they are not this half's work)
  and the processes continue (SIGCONT);
- whole shop: orders are placed for the load time with everything running, then the clock runs
  until the outbox has no pending or sent row and the sink has accepted one email per order
  placed. Whole-shop orders/s = orders / (load + drain).

CPU per order of each kind of process (web, relay, worker, beat, PostgreSQL, Redis) is read from
/proc over the whole-shop half: `utime + stime` of every live process of a tree plus `cutime +
cstime` of the tree's root, so PostgreSQL backends and worker children that exit still count.
PostgreSQL and Redis are the machine's servers: nothing else may use them during a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

import psutil
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("web", "relay", "worker", "beat", "postgres", "redis")
DRAIN_LIMIT_SECONDS = 900
SETTLE_SECONDS = 0.5  # after wrk stops, for the requests it left in flight to commit
DRAIN_POLL_SECONDS = 0.1
WATCH_SECONDS = 1.0  # the outbox backlog is sampled this often (one small query)
_TICKS = os.sysconf("SC_CLK_TCK")


# --- the SMTP sink ---------------------------------------------------------------------------------


class _SmtpSession(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT); accepts everything.
    It answers one command at a time from a buffered reader, so pipelined commands (RFC 2920,
    which it offers, as mail servers do) are answered in order."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def setup(self) -> None:
        super().setup()
        # Each reply goes out at once, as a mail server flushes the replies of a pipelined group;
        # with Nagle's algorithm the second reply would wait for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        self.in_transaction = False  # between MAIL and the transaction's end
        try:
            self._converse()
        except OSError:
            pass  # the client went away while we answered
        finally:
            if self.in_transaction:  # it left mid-transaction: nothing was delivered (RFC 5321 4.1.1.4)
                self.server.sink.abandon()

    def _converse(self) -> None:
        self.reply("220 stockroom-bench-sink ESMTP")
        recipients = 0  # accepted in the current mail transaction
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-stockroom-bench-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"HELO":
                self.reply("250 stockroom-bench-sink")
            elif verb == b"RCPT" and line.split(b":", 1)[-1].strip().strip(b"<>").decode() in self.server.sink.refuse:
                self.reply("550 No such user")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                if verb != b"NOOP":  # MAIL and RSET start a transaction, RCPT adds a recipient
                    recipients = recipients + 1 if verb == b"RCPT" else 0
                    self.in_transaction = verb != b"RSET"
                self.reply("250 OK")
            elif verb == b"DATA" and not recipients:
                self.in_transaction = False
                self.reply("554 No valid recipients")
            elif verb == b"DATA":
                recipients = 0
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                message = self._message()
                if message is None:
                    return
                self.in_transaction = False
                if self.server.sink.reject_marker and self.server.sink.reject_marker in message:
                    self.reply("554 Message rejected")
                    continue
                self.server.sink.accept(message)
                self.reply("250 OK")
            elif verb == b"QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")

    def _message(self) -> bytes | None:
        """The message's content, or None if the connection closed before its end."""
        lines = []
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return None
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpSink:
    """A local SMTP server counting the messages it accepts by Message-ID (thread-safe)."""

    def __init__(self, refuse: frozenset[str] = frozenset(), reject_marker: bytes = b""):
        self.refuse = refuse  # recipients answered 550 (tests)
        self.reject_marker = reject_marker  # content holding it is answered 554 after DATA (tests)
        self._server = _Server(("127.0.0.1", 0), _SmtpSession)
        self._server.sink = self
        self.port = self._server.server_address[1]
        self._lock = threading.Lock()
        self.message_ids: Counter[str] = Counter()
        self.abandoned = 0  # conversations that ended inside a mail transaction (nothing delivered)

    def accept(self, message: bytes) -> None:
        message_id = BytesHeaderParser().parsebytes(message).get("Message-ID", "").strip()
        with self._lock:
            self.message_ids[message_id] += 1

    def abandon(self) -> None:
        with self._lock:
            self.abandoned += 1

    def received(self) -> int:
        with self._lock:
            return sum(self.message_ids.values())

    def twice(self) -> int:
        """Message-IDs received more than once (an empty id counts as a repeat too)."""
        with self._lock:
            return sum(1 for mid, n in self.message_ids.items() if n > 1 or not mid)

    def __enter__(self) -> SmtpSink:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- CPU from /proc ---------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of every live process under `root` (itself included), plus the root's
    cutime + cstime: what its children that exited (and were reaped) used."""
    fields = _stat(root)
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    for child in psutil.Process(root).children(recursive=True):
        try:
            fields = _stat(child.pid)
        except OSError:  # it exited just now; its parent's cutime has it once reaped
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def postmaster_pid(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        return int(_stat(backend)[1])  # a backend's parent is the postmaster (read while it lives)


# --- the processes -----------------------------------------------------------------------------------


class Background:
    """bin/worker, bin/relay and bin/beat, as `make run` starts them (metrics ports off)."""

    def __init__(self, env: dict, tmp: Path):
        self.env = dict(
            env,
            LOG_LEVEL="WARNING",
            WORKER_METRICS_PORT="0",
            RELAY_METRICS_PORT="0",
            WORKER_PROMETHEUS_MULTIPROC_DIR=str(tmp / "prometheus-worker"),
        )
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []

    def __enter__(self) -> Background:
        for kind in ("worker", "relay", "beat"):
            log = (self.tmp / f"{kind}.log").open("w")
            self.logs.append(log)
            self.procs[kind] = subprocess.Popen(
                [str(ROOT / "bin" / kind)], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def signal(self, signum: int) -> None:
        for proc in self.procs.values():
            for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
                try:
                    process.send_signal(signum)
                except psutil.NoSuchProcess:
                    continue

    def __exit__(self, *exc) -> None:
        self.signal(signal.SIGCONT)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()


# --- one round ---------------------------------------------------------------------------------------


@dataclass
class Round:
    web_orders: int
    web_seconds: float
    orders: int
    load_seconds: float
    drain_seconds: float
    peak_backlog: int
    oldest_seconds: float
    emails: int
    twice: int
    cpu_seconds: dict[str, float]
    relay_peak_rss_mb: float
    web_only_cpu_seconds: dict[str, float] = field(default_factory=dict)  # web, postgres: the web-only half

    @property
    def web_rps(self) -> float:
        return self.web_orders / self.web_seconds

    @property
    def shop_rps(self) -> float:
        return self.orders / (self.load_seconds + self.drain_seconds)

    @property
    def ratio(self) -> float:
        return self.shop_rps / self.web_rps if self.web_rps else 0.0

    def cpu_ms_per_order(self, kind: str) -> float:
        return 1000 * self.cpu_seconds[kind] / self.orders if self.orders else 0.0


@dataclass
class _Backlog:
    peak: int = 0
    oldest: float = 0.0
    relay_rss_mb: float = 0.0
    last: int = 0
    samples: list = field(default_factory=list)


def _outbox_backlog(conn) -> tuple[int, float]:
    count, age = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM project_outboxmessage"
        " WHERE state IN ('pending', 'sent')"
    ).fetchone()
    return count, float(age)


def _watch(database_url: str, relay_pid: int, stop: threading.Event, backlog: _Backlog) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        while not stop.wait(WATCH_SECONDS):
            count, age = _outbox_backlog(conn)
            backlog.last = count
            backlog.peak = max(backlog.peak, count)
            backlog.oldest = max(backlog.oldest, age)
            with contextlib.suppress(psutil.NoSuchProcess):
                backlog.relay_rss_mb = max(backlog.relay_rss_mb, psutil.Process(relay_pid).memory_info().rss / 2**20)


def _tidy(conn) -> None:
    """What autovacuum does between rounds on a production server: the planner's statistics and the
    outbox's dead rows caught up with the orders of earlier rounds. Without it a server that runs
    with autovacuum off (as some development machines do) plans the email reads from statistics of
    an empty order table (sequential scans of the catalogue, about 10 ms a batch) and the relay
    wades through every claimed, sent and done row version of earlier rounds."""
    conn.execute("VACUUM (ANALYZE)")


def _last_order_id(conn) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM orders_order").fetchone()[0]


def _orders_since(conn, last_id: int) -> int:
    """Orders committed after `last_id`: the ones wrk counted, and the ones its connections still had
    in flight when it stopped (committed a moment later; their emails are this half's too)."""
    time.sleep(SETTLE_SECONDS)
    return conn.execute("SELECT count(*) FROM orders_order WHERE id > %s", [last_id]).fetchone()[0]


def run_round(
    *,
    place_orders: Callable[[float], float],  # places orders for so long; returns the seconds it ran
    load_seconds: float,
    web_pid: int,
    background: Background,
    sink: SmtpSink,
    database_url: str,
    redis_url: str,
) -> Round:
    """One web-only half, then one whole-shop half (see the module docstring)."""
    roots = {
        "web": web_pid,
        "relay": background.procs["relay"].pid,
        "worker": background.procs["worker"].pid,
        "beat": background.procs["beat"].pid,
        "postgres": postmaster_pid(database_url),
        "redis": int(redis.Redis.from_url(redis_url).info("server")["process_id"]),
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        _tidy(conn)
    background.signal(signal.SIGSTOP)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            last_id = _last_order_id(conn)
            web_before = {kind: tree_cpu_seconds(roots[kind]) for kind in ("web", "postgres")}
            web_seconds = place_orders(load_seconds)
            web_orders = _orders_since(conn, last_id)
            web_cpu = {kind: tree_cpu_seconds(roots[kind]) - web_before[kind] for kind in web_before}
            conn.execute("UPDATE project_outboxmessage SET state = 'done', done_at = now() WHERE state <> 'done'")
    finally:
        background.signal(signal.SIGCONT)

    before_cpu = {kind: tree_cpu_seconds(pid) for kind, pid in roots.items()}
    emails_before = sink.received()
    backlog, stop = _Backlog(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(database_url, roots["relay"], stop, backlog), daemon=True)
    watcher.start()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            last_id = _last_order_id(conn)
            seconds = place_orders(load_seconds)
            drain_started = time.perf_counter()
            orders = _orders_since(conn, last_id)
            while True:
                # The sink first: the database is asked only once every email has arrived, so the
                # benchmark's own queries stay out of PostgreSQL's CPU per order.
                if sink.received() - emails_before >= orders:
                    pending, _ = _outbox_backlog(conn)
                    if pending == 0:
                        break
                if time.perf_counter() - drain_started > DRAIN_LIMIT_SECONDS:
                    arrived = sink.received() - emails_before
                    raise RuntimeError(f"not drained in {DRAIN_LIMIT_SECONDS}s: {arrived} of {orders} emails arrived")
                time.sleep(DRAIN_POLL_SECONDS)
        drain = time.perf_counter() - drain_started
    finally:
        stop.set()
        watcher.join(5)
    after_cpu = {kind: tree_cpu_seconds(pid) for kind, pid in roots.items()}
    return Round(
        web_orders=web_orders,
        web_seconds=web_seconds,
        orders=orders,
        load_seconds=seconds,
        drain_seconds=drain,
        peak_backlog=backlog.peak,
        oldest_seconds=backlog.oldest,
        emails=sink.received() - emails_before,
        twice=sink.twice(),
        cpu_seconds={kind: after_cpu[kind] - before_cpu[kind] for kind in roots},
        relay_peak_rss_mb=backlog.relay_rss_mb,
        web_only_cpu_seconds=web_cpu,
    )


# --- the report ---------------------------------------------------------------------------------------


def median_spread(values: list[float], fmt: str) -> str:
    middle = statistics.median(values)
    if len(values) == 1:
        return format(middle, fmt)
    return f"{format(middle, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def report(rounds: list[Round]) -> str:
    """Medians over the rounds, with their spread (min-max) in brackets."""

    def row(name: str, values: list[float], fmt: str) -> str:
        return f"| {name} | {median_spread(values, fmt)} |"

    lines = [
        "| whole shop (median, min-max over rounds) | value |",
        "|---|---:|",
        row("web-only orders/s", [r.web_rps for r in rounds], ",.0f"),
        row("whole-shop orders/s = orders / (load + drain)", [r.shop_rps for r in rounds], ",.0f"),
        row("whole-shop / web-only", [r.ratio for r in rounds], ".2f"),
        row("orders placed per round", [r.orders for r in rounds], ",.0f"),
        row("load seconds", [r.load_seconds for r in rounds], ".1f"),
        row("drain seconds", [r.drain_seconds for r in rounds], ".1f"),
        row("peak outbox backlog (messages)", [r.peak_backlog for r in rounds], ",.0f"),
        row("oldest backlog message (seconds)", [r.oldest_seconds for r in rounds], ".1f"),
    ]
    for kind in KINDS:
        lines.append(row(f"CPU ms per order: {kind}", [r.cpu_ms_per_order(kind) for r in rounds], ".2f"))
    for kind in ("web", "postgres"):
        lines.append(
            row(f"web-only half: CPU ms per order: {kind}",
                [1000 * r.web_only_cpu_seconds[kind] / r.web_orders if r.web_orders else 0.0 for r in rounds], ".2f")
        )  # fmt: skip
    web = [r.cpu_ms_per_order("web") for r in rounds]
    background = [r.cpu_ms_per_order("relay") + r.cpu_ms_per_order("worker") for r in rounds]
    lines.append(
        row("relay + worker CPU / web CPU", [b / w if w else 0.0 for b, w in zip(background, web, strict=True)], ".2f")
    )
    lines.append(row("relay peak RSS MB", [r.relay_peak_rss_mb for r in rounds], ".0f"))
    emails = sum(r.emails for r in rounds)
    orders = sum(r.orders for r in rounds)
    twice = max(r.twice for r in rounds)
    lines.append(
        f"| emails received / orders placed (all rounds) | {emails:,} / {orders:,}, {twice} Message-IDs twice |"
    )
    return "\n".join(lines)


def delivered_exactly(rounds: list[Round]) -> bool:
    """Nothing is killed in this scenario: every order's email arrives, and once."""
    return all(r.emails == r.orders for r in rounds) and all(r.twice == 0 for r in rounds)
