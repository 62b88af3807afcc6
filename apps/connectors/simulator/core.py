"""The provider-neutral part of the channel simulator.

It owns the HTTP plumbing (a threading server, request parsing, routing), the control endpoints
every provider shares (`/_simulator/channels`, `/reset`, `/requests`, `/health`), the page at `/`,
and signed-webhook delivery with retries. A provider (whatsapp.py today; Messenger, Telegram,
WeChat and email later) subclasses `Provider`, declares its API routes and its control verbs,
and is listed in `PROVIDERS` in `__init__.py`. Nothing here imports Django: the simulator must run
beside Parley, not inside it.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import select
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

PAGE_PATH = Path(__file__).with_name("page.html")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Graph API clients may pin a version (`/v21.0/123/messages`) or not; both reach the same route.
VERSION_PREFIX = re.compile(r"^/v\d+(?:\.\d+)?(?=/)")
LOGGED_HEADERS = ("authorization", "content-type", "user-agent", "idempotency-key")
REQUEST_LOG_LIMIT = 2000


class ControlError(Exception):
    """A control-API call the simulator refuses; answered as `{"error": message}`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Run once the answer is on the wire: webhooks that must not overtake the HTTP response
    # (a status callback arriving before the send call returned its wamid).
    after: list[Callable[[], None]] = field(default_factory=list)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload).encode())


@dataclass
class Request:
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes

    @cached_property
    def _split(self):
        return urlsplit(self.target)

    @property
    def raw_path(self) -> str:
        return self._split.path

    @cached_property
    def path(self) -> str:
        return VERSION_PREFIX.sub("", self.raw_path, count=1)

    @cached_property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self._split.query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def bearer_token(self) -> str | None:
        scheme, _, token = (self.header("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    @cached_property
    def json_body(self) -> Any:
        """The parsed JSON body; ControlError when it is not JSON. An empty body reads as {}."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ControlError(f"body is not valid JSON: {exc}") from exc

    def json_object(self) -> dict[str, Any]:
        body = self.json_body
        if not isinstance(body, dict):
            raise ControlError("body must be a JSON object")
        return body


Handler = Callable[..., Response | None]


@dataclass(frozen=True)
class Route:
    """`handler(request, **named_groups)`; returning None means "not mine, try the next route"
    (WhatsApp and Messenger share Graph paths such as `/{id}/messages`)."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, pattern: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), handler)


# Webhook delivery --------------------------------------------------------------------------------


@dataclass
class DeliveryPolicy:
    attempts: int = 4
    backoff: float = 0.25  # seconds before the second attempt, doubled before each next one
    timeout: float = 3.0  # per attempt


@dataclass
class Delivery:
    url: str
    statuses: list[int | None] = field(default_factory=list)  # one per attempt; None: no answer

    @property
    def status(self) -> int | None:
        return self.statuses[-1] if self.statuses else None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead off loopback; providers do not follow them either.
    def redirect_request(self, *args, **kwargs):
        return None


# No proxies: an HTTP(S)_PROXY in the environment must not route loopback calls elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


# Plain-HTTP calls keep their connections open for the next call to the same server, as the
# providers' webhook senders do: a new TCP connection per status callback (hundreds a second in
# a broadcast) cost Parley's web process more to accept than the callback to store.
_IDLE: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
_IDLE_LOCK = threading.Lock()
_IDLE_KEPT = 32  # per server
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _idle_connection(server) -> http.client.HTTPConnection | None:
    """A kept connection to `server` that is still open: an idle one has nothing to read unless
    the server closed it (then it is readable, at its end) and it is dropped."""
    while True:
        with _IDLE_LOCK:
            idle = _IDLE.setdefault(server, [])
            connection = idle.pop() if idle else None
        if connection is None:
            return None
        try:
            closed = connection.sock is None or bool(select.select([connection.sock], [], [], 0)[0])
        except (OSError, ValueError):
            closed = True
        if not closed:
            return connection
        connection.close()


def _kept_alive_call(method, parts, body, headers, timeout) -> tuple[int | None, bytes]:
    server = (parts.hostname, parts.port or 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = _idle_connection(server)
    for _ in range(2):
        reused = connection is not None
        if connection is None:
            connection = http.client.HTTPConnection(*server, timeout=timeout)
        else:
            connection.sock.settimeout(timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            answer = connection.getresponse()
            data = answer.read()
        except _STALE:
            connection.close()
            if reused:
                connection = None  # closed by the server as it was taken: once more on a new one
                continue
            return None, b""
        except (OSError, http.client.HTTPException):
            connection.close()
            return None, b""
        with _IDLE_LOCK:
            if answer.will_close or len(_IDLE[server]) >= _IDLE_KEPT:
                connection.close()
            else:
                _IDLE[server].append(connection)
        return answer.status, data
    return None, b""


def http_call(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 3.0,
) -> tuple[int | None, bytes]:
    """One HTTP exchange on loopback: (status, body), or (None, b"") when nothing answered."""
    assert_loopback(url)  # so only http(s) on this machine, which is what S310 worries about
    parts = urlsplit(url)
    if parts.scheme == "http":
        return _kept_alive_call(method, parts, body, headers, timeout)
    request = urllib.request.Request(url, body, dict(headers or {}), method=method)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return None, b""


def deliver(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: DeliveryPolicy,
    cancelled: Callable[[], bool] = lambda: False,
) -> Delivery:
    """POST like a provider does: retry a non-2xx answer or a dead connection with backoff,
    until `cancelled()` (the simulator was reset meanwhile)."""
    delivery = Delivery(url)
    pause = policy.backoff
    for attempt in range(max(policy.attempts, 1)):
        if attempt:
            time.sleep(pause)
            pause *= 2
        if cancelled():
            break
        status, _ = http_call("POST", url, body=body, headers=headers, timeout=policy.timeout)
        delivery.statuses.append(status)
        if delivery.ok:
            break
    return delivery


def post_repeatedly(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    times: int,
    concurrent: bool,
    timeout: float,
) -> list[int | None]:
    """POST the same bytes `times` times, without retries; with `concurrent`, all at once
    (released together by a barrier) to provoke a duplicate-delivery race."""

    def post() -> int | None:
        return http_call("POST", url, body=body, headers=headers, timeout=timeout)[0]

    if not concurrent:
        return [post() for _ in range(times)]
    barrier = threading.Barrier(times)
    statuses: list[int | None] = [None] * times

    def run(index: int) -> None:
        barrier.wait()
        statuses[index] = post()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def in_background(target: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=_logged(target), args=args, daemon=True)
    thread.start()
    return thread


def _logged(target: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> None:
        try:
            target(*args)
        except Exception:
            traceback.print_exc(file=sys.stderr)

    return run


def assert_loopback(url: str) -> None:
    """The simulator talks to nothing but this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise ControlError(f"{url!r} is not an http(s) URL on loopback (127.0.0.1, localhost, ::1)")


# Providers and the simulator ---------------------------------------------------------------------


class Provider:
    """One simulated messaging provider. Subclasses set `kind` and fill the hooks below; all their
    shared state sits behind `self.lock`, and slow I/O (webhooks, sleeps) happens outside it."""

    kind: ClassVar[str] = ""

    def __init__(self, simulator: Simulator):
        self.simulator = simulator
        self.lock = threading.RLock()

    def api_routes(self) -> list[Route]:
        """The provider's own API (what Parley's connector calls)."""
        return []

    def control_verbs(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        """Control endpoints under `/_simulator/<verb>`, keyed by (method, verb)."""
        return {}

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        raise ControlError(f"{self.kind} channels cannot be registered")

    def channels(self) -> list[dict[str, Any]]:
        return []

    def reset(self, *, channels: bool) -> None:
        """Forget messages, faults and settings; channels too when asked."""


class Simulator:
    def __init__(self, provider_classes: list[type[Provider]]):
        self.base_url = "http://127.0.0.1"  # replaced by make_server() once the port is known
        self.providers = {cls.kind: cls(self) for cls in provider_classes}
        self.default_kind = next(iter(self.providers))
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._requests: list[dict[str, Any]] = []
        self._routes = self._build_routes()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._sequence)

    def handle(self, request: Request) -> Response:
        try:
            return self._dispatch(request)
        except ControlError as exc:
            return json_response({"error": str(exc)}, exc.status)

    def _dispatch(self, request: Request) -> Response:
        for candidate in self._routes:
            match = candidate.pattern.fullmatch(request.path)
            if match and candidate.method == request.method:
                response = candidate.handler(request, **match.groupdict())
                if response is not None:
                    return response
        if request.path.startswith("/_") or request.path == "/":
            raise ControlError(f"no route for {request.method} {request.path}", 404)
        response = unknown_graph_object(request)
        self.record_request("", request, response)
        return response

    def _build_routes(self) -> list[Route]:
        routes = [
            route("GET", r"/", self._page),
            route("GET", r"/favicon.ico", lambda request: Response(204)),
            route("GET", r"/_simulator/health", lambda request: json_response({"status": "ok"})),
            route("GET", r"/_simulator/channels", self._list_channels),
            route("POST", r"/_simulator/channels", self._register_channel),
            route("POST", r"/_simulator/reset", self._reset),
            route("GET", r"/_simulator/requests", self._list_requests),
            route("GET", r"/_simulator/(?P<verb>.+)", self._control),
            route("POST", r"/_simulator/(?P<verb>.+)", self._control),
        ]
        for provider in self.providers.values():
            routes += [_logging(self, provider.kind, r) for r in provider.api_routes()]
        return routes

    def provider_for(self, request: Request) -> Provider:
        """The provider a control call is for: `kind` in the body or query, else the default."""
        body = request.json_body if request.method == "POST" else {}
        kind = (body.get("kind") if isinstance(body, dict) else None) or request.query.get("kind")
        provider = self.providers.get(kind or self.default_kind)
        if provider is None:
            raise ControlError(f"unknown kind {kind!r}; known: {sorted(self.providers)}")
        return provider

    def _page(self, request: Request) -> Response:
        return Response(200, PAGE_PATH.read_bytes(), "text/html; charset=utf-8")

    def _list_channels(self, request: Request) -> Response:
        listed = [c for provider in self.providers.values() for c in provider.channels()]
        return json_response(listed)

    def _register_channel(self, request: Request) -> Response:
        provider = self.provider_for(request)
        return json_response(provider.register_channel(request.json_object()), 201)

    def _reset(self, request: Request) -> Response:
        channels = bool(request.json_object().get("channels"))
        for provider in self.providers.values():
            provider.reset(channels=channels)
        with self._lock:
            self._requests.clear()
        return json_response({"reset": True, "channels_cleared": channels})

    def _control(self, request: Request, verb: str) -> Response:
        provider = self.provider_for(request)
        handler = provider.control_verbs().get((request.method, verb.strip("/")))
        if handler is None:
            raise ControlError(f"no control endpoint {request.method} /_simulator/{verb}", 404)
        return handler(request)

    def record_request(self, kind: str, request: Request, response: Response) -> None:
        entry = {
            "seq": self.next_seq(),
            "kind": kind,
            "time": time.time(),
            "method": request.method,
            "path": request.raw_path,
            "query": request.query,
            "headers": {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers},
            "body": _loggable_body(request),
            "status": response.status,
        }
        with self._lock:
            self._requests.append(entry)
            del self._requests[:-REQUEST_LOG_LIMIT]

    def _list_requests(self, request: Request) -> Response:
        kind = request.query.get("kind")
        with self._lock:
            listed = [r for r in self._requests if kind in (None, r["kind"])]
        return json_response(listed)


def _logging(simulator: Simulator, kind: str, api_route: Route) -> Route:
    """Wrap a provider API route so every call it answers lands in `/_simulator/requests`."""

    def handler(request: Request, **groups: str) -> Response | None:
        response = api_route.handler(request, **groups)
        if response is not None:
            simulator.record_request(kind, request, response)
        return response

    return Route(api_route.method, api_route.pattern, handler)


def _loggable_body(request: Request) -> Any:
    if not request.body:
        return None
    content_type = request.header("Content-Type") or ""
    if content_type.startswith("multipart/"):
        return {"multipart": True, "bytes": len(request.body)}
    try:
        return json.loads(request.body)
    except ValueError:
        return request.body[:2000].decode("utf-8", "replace")


def unknown_graph_object(request: Request) -> Response:
    """What the Graph API answers for an id nobody owns (Meta's wording, code 100 subcode 33)."""
    object_id = request.path.strip("/").split("/")[0]
    message = (
        f"Unsupported {request.method.lower()} request. Object with ID '{object_id}' does not "
        "exist, cannot be loaded due to missing permissions, or does not support this operation."
    )
    error = {"message": message, "type": "GraphMethodException", "code": 100, "error_subcode": 33}
    return json_response({"error": {**error, "fbtrace_id": "SIMULATOR"}}, 400)


# HTTP server -------------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ParleyChannelSimulator/1.0"
    # Headers and body go out in separate writes; on a kept-alive connection Nagle's algorithm
    # would hold the body back ~40 ms waiting for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: SimulatorServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        request = Request(self.command, self.path, self.headers, self._read_body())
        try:
            response = self.server.simulator.handle(request)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = json_response({"error": "simulator crashed; see its stderr"}, 500)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        self.wfile.flush()
        for callback in response.after:
            callback()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator, *, verbose: bool):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)
        self.simulator = simulator
        self.verbose = verbose


def make_server(
    simulator: Simulator, host: str = "127.0.0.1", port: int = 8025, *, verbose: bool = True
) -> SimulatorServer:
    server = SimulatorServer((host, port), simulator, verbose=verbose)
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    simulator.base_url = f"http://{shown_host}:{bound_port}"
    return server
