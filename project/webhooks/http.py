"""One webhook attempt: a single HTTP(S) POST that cannot be turned against the shop's own network.

An endpoint's URL is typed by staff, but the host it names is whoever controls its DNS, so:

- the host is resolved here (`socket.getaddrinfo`), and every address it resolves to must be a
  public one (`address_refusal`: loopback, private, link-local, unique-local, multicast,
  unspecified, reserved, CGNAT 100.64/10, benchmarking, NAT64/6to4/Teredo, and IPv4-mapped IPv6
  of any of those are refused) unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES is on. Numeric spellings
  (`2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`) resolve to what they mean and are refused the same way;
- the connection goes to the checked ADDRESS, never to the name again (a second lookup could
  answer differently: DNS rebinding), and the peer the socket reached is checked to be it;
- https only, unless WEBHOOK_ALLOW_HTTP; TLS verifies the certificate for the URL's host name
  (SNI and Host: the name, not the address);
- no redirect is followed (a 3xx is a failed attempt with its status), proxy variables are ignored
  (http.client reads none), and WEBHOOK_TIMEOUT_SECONDS bounds the WHOLE attempt: resolving,
  connecting, the handshake, sending and a response that drips in a byte at a time (a watchdog
  shuts the socket down at the deadline);
- at most WEBHOOK_RESPONSE_MAX_BYTES of the answer are read, then the connection is closed.

`post` returns a `PostResult` (status, duration, body excerpt) or raises a `DeliveryError` whose
message is short enough to store as the delivery's last error.
"""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from django.conf import settings

# Networks refused beyond what ipaddress calls private, reserved, loopback, link-local...: shared
# address space (CGNAT), benchmarking, IETF protocol assignments, and IPv6 prefixes that embed an
# IPv4 address a gateway would reach (NAT64, 6to4, Teredo).
REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "2001::/32",
    )
)


class DeliveryError(Exception):
    """An attempt that got no HTTP answer; its message is the delivery's `last_error`."""


class UrlRefused(DeliveryError):
    """The URL itself is not one we send to (scheme, credentials, no host)."""


class AddressRefused(DeliveryError):
    """The host resolved to an address webhooks must not reach (SSRF)."""


class DeliveryTimeout(DeliveryError):
    """No complete answer within the attempt's time."""


class PostResult(NamedTuple):
    status: int
    duration_ms: int
    body: bytes  # the first WEBHOOK_RESPONSE_MAX_BYTES of the answer at most


def address_refusal(address: str) -> str | None:
    """Why an address (text, as getaddrinfo gives it) may not be reached, or None if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") is not part of it
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        reason = address_refusal(str(ip.ipv4_mapped))
        return f"IPv4-mapped {reason}" if reason else None
    for word in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private", "site_local"):
        if getattr(ip, f"is_{word}", False):
            return word.replace("_", "-")
    if any(ip in network for network in REFUSED_NETWORKS if network.version == ip.version):
        return "special-purpose"
    if not ip.is_global:
        return "not global"
    return None


def _resolve(host: str, port: int, deadline: float) -> list[tuple]:
    """The host's addresses (getaddrinfo), each checked. getaddrinfo takes no timeout: a resolver
    that hangs is bounded by the system's resolver settings; the deadline is checked after it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc}") from None
    if time.monotonic() >= deadline:
        raise DeliveryTimeout(f"resolving {host} took longer than the attempt's time")
    if not infos:
        raise DeliveryError(f"{host} has no address")
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        for *_, sockaddr in infos:
            reason = address_refusal(sockaddr[0])
            if reason is not None:
                raise AddressRefused(f"address refused: {host} resolves to {sockaddr[0]} ({reason})")
    return infos


class _Watchdog:
    """Shuts the connection down at the deadline, so a read blocked on a receiver that drips its
    answer (or its TLS handshake) returns. It holds a duplicate of the socket's descriptor of its
    own: shutdown(2) acts on the connection, whichever descriptor names it, and the duplicate is
    never closed under another thread's feet nor reused by another connection before cancel()."""

    def __init__(self, sock: socket.socket, seconds: float):
        self._dup = sock.dup()
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                self._dup.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            self._dup.close()


def _connect(infos: list[tuple], deadline: float, host: str) -> socket.socket:
    """A TCP connection to the first checked address that answers; its peer is checked to be it."""
    last_error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeliveryTimeout(f"connecting to {host} took longer than the attempt's time")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(sockaddr)
            peer = sock.getpeername()
            if ipaddress.ip_address(peer[0].split("%", 1)[0]) != ipaddress.ip_address(sockaddr[0].split("%", 1)[0]):
                raise AddressRefused(f"connected to {peer[0]}, not the checked address {sockaddr[0]}")
            return sock
        except TimeoutError:
            sock.close()
            raise DeliveryTimeout(f"connecting to {host} ({sockaddr[0]}) timed out") from None
        except AddressRefused:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = exc
    raise DeliveryError(f"cannot connect to {host}: {last_error.strerror if last_error else 'no address'}")


def _tls(sock: socket.socket, host: str, deadline: float) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise DeliveryError(f"TLS certificate of {host} refused: {exc.verify_message}") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise DeliveryTimeout(f"TLS handshake with {host} timed out") from None
        raise DeliveryError(f"TLS handshake with {host} failed: {exc}") from None


def _target(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, Host header, request target) of a URL we may send to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.WEBHOOK_ALLOW_HTTP:
        raise UrlRefused("http:// is not allowed here: use https://")
    if scheme not in ("http", "https"):
        raise UrlRefused(f"scheme {scheme or '(none)'} is not allowed: use https://")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise UrlRefused("the URL has no host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), parts.netloc, target


def post(url: str, *, body: bytes, headers: Mapping[str, str], timeout: float | None = None) -> PostResult:
    """POST `body` to `url` once (see the module's rules). Returns the status, the time it took in
    milliseconds and the first WEBHOOK_RESPONSE_MAX_BYTES of the answer; raises DeliveryError
    (UrlRefused, AddressRefused, DeliveryTimeout) when there is no answer."""
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS if timeout is None else timeout
    started = time.monotonic()
    deadline = started + seconds
    scheme, host, port, host_header, target = _target(url)
    infos = _resolve(host, port, deadline)
    sock = _connect(infos, deadline, host)
    watchdog = _Watchdog(sock, deadline - time.monotonic())
    try:
        if scheme == "https":
            sock = _tls(sock, host, deadline)
        result = _exchange(sock, host, host_header, target, body, headers, deadline, started)
        if watchdog.fired:  # the shutdown ended the answer early: what was read is not the answer
            raise DeliveryTimeout(f"no complete answer from {host} within {seconds:g} s")
        return result
    except (OSError, http.client.HTTPException, DeliveryError) as exc:
        if watchdog.fired or time.monotonic() >= deadline or isinstance(exc, TimeoutError | DeliveryTimeout):
            raise DeliveryTimeout(f"no complete answer from {host} within {seconds:g} s") from None
        if isinstance(exc, DeliveryError):
            raise
        raise DeliveryError(f"{host}: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        watchdog.cancel()
        sock.close()


def _exchange(
    sock: socket.socket,
    host: str,
    host_header: str,
    target: str,
    body: bytes,
    headers: Mapping[str, str],
    deadline: float,
    started: float,
) -> PostResult:
    # http.client on the socket already connected (and checked): it never resolves the name itself.
    connection = http.client.HTTPConnection(host, timeout=max(deadline - time.monotonic(), 0.001))
    connection.sock = sock
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    connection.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host_header)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.putheader("Connection", "close")
    connection.endheaders(body)
    response = connection.getresponse()
    excerpt = response.read(settings.WEBHOOK_RESPONSE_MAX_BYTES)
    duration_ms = int((time.monotonic() - started) * 1000)
    connection.sock = None  # the caller closes the socket; http.client must not reuse it
    return PostResult(response.status, duration_ms, excerpt)
