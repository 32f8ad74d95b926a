"""BENCH_RATE paces a wrk run (tests/bench/lua/common.lua): never more requests than the rate allows.

The paced list scenario of `make bench` (catalogue_while_ordering_60) relies on it. wrk runs here
against a local HTTP server that counts what it answers; nothing is timed, only counted.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.bench.__main__ import WRK_THREADS, Scenario, wrk


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn serves wrk
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40-ms delayed ACK between
    answered = 0
    lock = threading.Lock()

    def do_GET(self):
        with _Counting.lock:
            _Counting.answered += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # wrk resets its connections when it stops


def _answered_during_wrk(port: int, seconds: int, rate: str | None) -> int:
    """Requests the server answered during one run of the bench's own wrk helper (2 connections)."""
    scenario = Scenario("paced", "/", env={} if rate is None else {"BENCH_RATE": rate})
    before = _Counting.answered
    wrk(port, scenario, seconds, 2, {})
    return _Counting.answered - before


def test_a_paced_run_sends_at_most_the_rate_and_an_unpaced_one_is_not_held_back():
    server = _QuietServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        paced = _answered_during_wrk(port, 2, "10")
        unpaced = _answered_during_wrk(port, 1, None)
    finally:
        server.shutdown()
        server.server_close()

    # 10 requests/s for 2 s: each thread spaces its requests 2 x 100 ms apart, its first one after
    # one interval, so about 20 in all. wrk's timers take whole milliseconds and its duration is
    # not exact to the millisecond: 5% more, and one request per thread in flight at the end.
    most = 10 * 2 * 1.05 + WRK_THREADS
    assert 0 < paced <= most
    assert unpaced > most
