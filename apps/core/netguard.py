"""The outbound-request guard: Parley never calls a private address because a URL told it to.

A workspace member configures URLs that Parley's servers then call (workflow HTTP and notify
steps, webhook subscriptions, the order lookup, the custom channel), and providers' payloads name
files to download. Pointed at 127.0.0.1, 10.0.0.0/8 or 169.254.169.254 (a cloud's metadata
service, which hands out its credentials) such a request would reach what only Parley's own
network should (SSRF). Every such request goes through `client()` (or `request`/`get`/`post`/
`stream`, httpx's own signatures), whose transport resolves the host itself, refuses when any
address it resolves to is loopback, private, link-local, shared (CGNAT), multicast, reserved or
otherwise not public, and then connects to the very address it checked: a name cannot resolve to
a public address for the check and to a private one for the connection (DNS rebinding). Each
redirect opens its connection through the same check.

`OUTBOUND_ALLOWED_NETWORKS` (CIDRs) lets named networks through: loopback for development and the
test suite, whose channel simulator listens on 127.0.0.1; a company's own private network where
its order system lives. A refusal raises `OutboundBlocked`, an `httpx.RequestError`, so a caller's
`except httpx.HTTPError` takes its failure path with a message naming the address and the reason.

No maintained library fits: PyPI's are async-only (httpx-secure) or single releases. Proxies from
the environment (HTTP_PROXY) are not used by these clients: the proxy would do the connecting.
"""

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: an IPv4 address inside IPv6
DEFAULT_TIMEOUT = httpx.Timeout(5.0)  # httpx's own default
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class OutboundBlocked(httpx.RequestError):
    """A request Parley refused to make: its address is not public."""


class _Refused(Exception):
    """Raised inside httpcore, which knows no request; the transport re-raises it as OutboundBlocked."""


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _allowed(address: IPAddress) -> bool:
    return any(address in network for network in _networks(tuple(settings.OUTBOUND_ALLOWED_NETWORKS)))


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (::ffff:10.0.0.1, 64:ff9b::a00:1, 2002:a00:1::): a
    host would connect to that one."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_problem(address: IPAddress) -> str:
    """Why Parley must not connect to `address` ("" when it may)."""
    if _allowed(address):
        return ""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_problem(embedded)
    checks = (
        (address.is_unspecified, "an unspecified"),
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address in SHARED_ADDRESS_SPACE, "a shared (carrier-grade NAT)"),
        (address.is_multicast, "a multicast"),
        (address.is_private, "a private"),
        (address.is_reserved, "a reserved"),
        (not address.is_global, "a non-public"),
    )
    return next((f"{reason} address" for refused, reason in checks if refused), "")


def _refusal(named: str, problem: str) -> str:
    return f"{named}, {problem}: Parley does not call private networks (OUTBOUND_ALLOWED_NETWORKS lets one through)."


def resolve_checked(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, once all are found public (or allowed); else _Refused."""
    host = host.strip("[]")
    try:
        addresses = [ipaddress.ip_address(host.split("%")[0])]
        literal = True
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError) as error:  # UnicodeError too: a label over 63 characters
            raise httpcore.ConnectError(f"{host}: {error}") from error
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))
        literal = False
    for address in addresses:
        if problem := address_problem(address):
            raise _Refused(_refusal(host if literal else f"{host} resolves to {address}", problem))
    return [str(address) for address in addresses]


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects to an address it has just checked, never to a name resolved again later."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        failure: Exception | None = None
        for address in resolve_checked(host, port):
            try:
                return self._backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error  # the next address the name has, as a resolver's caller would
        raise failure or httpcore.ConnectError(f"{host}: no address")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise _Refused("Parley does not call unix sockets for a configured URL.")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport over a connection pool with the guarded network backend. TLS still
    verifies the certificate against the URL's host name: httpcore passes that along."""

    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        # Not super().__init__(): it would build a pool, and a TLS context (~20 ms), to be replaced.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except _Refused as refused:
            raise OutboundBlocked(str(refused), request=request) from None


@lru_cache(maxsize=1)
def _ssl_context():
    """One TLS context (httpx's default: verifying, certifi's CAs or SSL_CERT_FILE) for every guarded
    client: each costs ~20 ms of CPU to build, and one is safe to share between threads."""
    return httpx.create_ssl_context()


def client(*, allow_private: bool = False, limits: httpx.Limits = DEFAULT_LIMITS, **options) -> httpx.Client:
    """An httpx.Client whose every connection is checked; `allow_private` (a channel that says its
    files live on a private network) turns the check off for this client alone."""
    if allow_private:
        return httpx.Client(transport=httpx.HTTPTransport(limits=limits), trust_env=False, **options)
    transport = GuardedTransport(limits=limits)
    return httpx.Client(transport=transport, trust_env=False, **options)


def request(method: str, url: str, *, timeout=DEFAULT_TIMEOUT, follow_redirects=False, allow_private=False, **kwargs):
    """httpx.request, guarded."""
    with client(timeout=timeout, allow_private=allow_private) as guarded:
        return guarded.request(method, url, follow_redirects=follow_redirects, **kwargs)


def get(url: str, **kwargs) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs) -> httpx.Response:
    return request("POST", url, **kwargs)


@contextmanager
def stream(
    method: str, url: str, *, timeout=DEFAULT_TIMEOUT, follow_redirects=False, allow_private=False, **kwargs
) -> Iterator[httpx.Response]:
    """httpx.stream, guarded."""
    with (
        client(timeout=timeout, allow_private=allow_private) as guarded,
        guarded.stream(method, url, follow_redirects=follow_redirects, **kwargs) as response,
    ):
        yield response


def url_problem(url: str) -> str:
    """Why a configured URL would be refused ("" when it would not), for a form or an API to say
    at once. A name that does not resolve now is not refused: the request itself is checked again."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Enter a valid http:// or https:// address."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Enter an http:// or https:// address."
    if "{" in parts.hostname:
        return ""  # filled in from variables when called, and checked then
    try:
        resolve_checked(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    except _Refused as refused:
        return str(refused)
    except httpcore.ConnectError:
        pass
    return ""


def validate_outbound_url(value: str) -> None:
    """A model field validator: a form (the admin) and a serializer (the API) show the refusal
    as the field's error."""
    from django.core.exceptions import ValidationError

    if problem := url_problem(value):
        raise ValidationError(problem, code="private_address")
