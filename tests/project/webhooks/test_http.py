"""The one-shot POST: SSRF refusals, https only where required, no redirects, bounded answers and a
deadline on the whole attempt. Real sockets and real servers on loopback; the tests that must reach
loopback turn WEBHOOK_ALLOW_PRIVATE_ADDRESSES on for themselves."""

import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from project.webhooks import http
from project.webhooks.http import AddressRefused, DeliveryError, DeliveryTimeout, UrlRefused, address_refusal
from project.webhooks.signing import new_secret
from tests.project.webhooks.support import Receiver, drip_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def receiver():
    with Receiver() as server:
        server.route("/hook", new_secret())
        yield server


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "0.0.0.0",  # noqa: S104 - an address to refuse
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.0.8",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:db8::1",  # documentation
    ],
)
def test_special_addresses_are_refused(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",  # a name resolving to loopback
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f.1",  # and in hex, short form
        "0177.0.0.1",  # and in octal
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
    ],
)
def test_loopback_in_any_spelling_is_refused_before_connecting(receiver, settings, host):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(AddressRefused, match="address refused"):
        http.post(f"http://{host}:{receiver.port}/hook", body=b"{}", headers={})
    assert receiver.requests() == []  # nothing reached the receiver


def test_allowed_private_addresses_reach_the_receiver_with_the_urls_host(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    result = http.post(
        f"http://localhost:{receiver.port}/hook?x=1", body=b'{"a":1}', headers={"content-type": "application/json"}
    )
    assert result.status == 200 and result.body == b"ok" and result.duration_ms >= 0
    (request,) = receiver.requests()
    assert request.headers["host"] == f"localhost:{receiver.port}"
    assert request.body == b'{"a":1}'


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "scheme ftp"),
        ("file:///etc/passwd", "scheme file"),
        ("https://user:pw@example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("https://example.com:99999/", "invalid URL"),
    ],
)
def test_urls_we_do_not_send_to_are_refused(url, message):
    with pytest.raises(UrlRefused, match=message):
        http.post(url, body=b"{}", headers={})


def test_plain_http_is_refused_where_only_https_is_allowed(receiver, settings):
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(UrlRefused, match="use https"):
        http.post(receiver.url("/hook"), body=b"{}", headers={})
    assert receiver.requests() == []


def test_the_production_profile_allows_https_only():
    text = open("project/settings/production.py").read()  # noqa: SIM115
    assert 'WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", False)' in text


class _Redirect(BaseHTTPRequestHandler):
    followed = threading.Event()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/elsewhere":
            _Redirect.followed.set()
        self.send_response(307 if self.path == "/start" else 200)
        self.send_header("location", "/elsewhere")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirect_is_not_followed_it_is_the_attempts_status(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = http.post(f"http://127.0.0.1:{server.server_address[1]}/start", body=b"{}", headers={})
    finally:
        server.shutdown()
        server.server_close()
    assert result.status == 307
    assert not _Redirect.followed.is_set()


def test_the_answer_is_read_up_to_the_limit(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    settings.WEBHOOK_RESPONSE_MAX_BYTES = 100
    big = b"x" * 1_000_000
    server, stop = drip_server(
        [
            b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\n\r\n" % len(big),
            *[big[i : i + 65536] for i in range(0, len(big), 65536)],
        ],
        interval=0,
    )
    try:
        result = http.post(f"http://127.0.0.1:{server.server_address[1]}/", body=b"{}", headers={})
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    assert result.status == 500
    assert result.body == b"x" * 100


def test_a_receiver_dripping_its_answer_is_cut_off_by_the_whole_attempt_deadline(settings):
    """A byte every 0.2 s keeps every single read well inside any per-read timeout; only a deadline on
    the whole attempt stops it (the drip would last 60 s; the test's own timeout is 60 s)."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    server, stop = drip_server([b"HTTP/1.1 200 OK\r\n", *[b"x-drip: y\r\n" for _ in range(300)]], interval=0.2)
    try:
        with pytest.raises(DeliveryTimeout, match="within 1 s"):
            http.post(f"http://127.0.0.1:{server.server_address[1]}/", body=b"{}", headers={}, timeout=1)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_refused_connection_is_a_delivery_error(settings):
    from tests.support import closed_port

    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    with pytest.raises(DeliveryError, match="cannot connect"):
        http.post(f"http://127.0.0.1:{closed_port()}/", body=b"{}", headers={})


def test_https_verifies_the_certificate_for_the_host_name(settings, tmp_path):
    """A self-signed certificate (no CA vouches for it) is refused: the handshake verifies."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    with Receiver() as server:
        server.route("/hook", new_secret())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        with pytest.raises(DeliveryError, match="certificate"):
            http.post(f"https://localhost:{server.port}/hook", body=b"{}", headers={})
        assert server.requests() == []
