"""Test doubles around the channel simulator: the simulator in a subprocess, and a tiny HTTP
receiver that plays Parley's webhook endpoint (checks signatures, answers the verify handshake,
answers scripted statuses). Standard library plus httpx; no Django."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]


def expected_signature(secret: str, raw: bytes) -> str:
    """Computed independently of the simulator's own signing code."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def eventually(probe, timeout: float = 5.0, interval: float = 0.05):
    """The first truthy result of `probe()`, polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout}s")
        time.sleep(interval)
    return result


class SimulatorProcess:
    """`python -m apps.connectors.simulator --port 0` with an httpx client on its address."""

    def __init__(self, *extra_args: str, log: Path):
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.connectors.simulator", "--port", "0", "--quiet", *extra_args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.url = self._read_address(log)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def _read_address(self, log: Path) -> str:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=15)
        if not lines or "listening on" not in lines[0]:
            self.stop()
            raise RuntimeError(f"simulator did not start: {lines!r}\n{log.read_text()[-2000:]}")
        return lines[0].strip().rsplit(" ", 1)[-1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    """Parley's webhook endpoint, played in a thread. POSTs with a bad signature get 401 (as
    Parley answers them); otherwise the next scripted status, else 200."""

    def __init__(self, *, app_secret: str, verify_token: str):
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.requests: list[Received] = []
        self._script: deque[int] = deque()
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/3f9c2d1e/"

    def answer_next(self, *statuses: int) -> None:
        self._script.extend(statuses)

    def clear(self) -> None:
        with self._changed:
            self.requests.clear()
            self._script.clear()

    def posts(self) -> list[Received]:
        with self._changed:
            return [r for r in self.requests if r.method == "POST"]

    def wait_for_posts(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len([r for r in self.requests if r.method == "POST"]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} webhook POSTs, got {len(self.posts())}")
                self._changed.wait(remaining)
        return self.posts()

    def statuses(self) -> list[dict]:
        """Every `statuses[]` item received so far, in arrival order."""
        items = []
        for post in self.posts():
            for entry in post.json().get("entry", []):
                for change in entry["changes"]:
                    items += change["value"].get("statuses", [])
        return items

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, received: Received) -> None:
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

    def _answer_post(self, received: Received) -> int:
        signature = received.headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(signature, expected_signature(self.app_secret, received.body)):
            return 401
        return self._script.popleft() if self._script else 200

    def _handler_class(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                status = receiver._answer_post(received)
                receiver._record(received)
                self._reply(status, b"")

            def do_GET(self):
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                receiver._record(Received("GET", self.path, dict(self.headers.items()), b""))
                if query.get("hub.mode") == "subscribe" and query.get("hub.verify_token") == receiver.verify_token:
                    self._reply(200, query.get("hub.challenge", "").encode())
                else:
                    self._reply(403, b"verify token mismatch")

            def _reply(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        return Handler
