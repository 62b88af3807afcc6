"""The connectors' HTTP client: one per process, shared by its threads.

`httpx.post` and friends make a new client for every call, and a client's TLS context costs
~20 ms of CPU to build (it loads the CA bundle), far more than the request itself: at the
busy day's load, operators' replies alone spent a fifth of the worker's time there. One client
per process keeps those contexts and the providers' connections. httpx's client is safe to
share between threads; a forked process (Celery's prefork pool) makes its own on first use, never
inheriting its parent's sockets. Calls pass their own timeouts, as they did to `httpx.post`."""

import os
import threading

import httpx

_lock = threading.Lock()
_client: httpx.Client | None = None
_owner: int | None = None  # the pid that made _client


def http() -> httpx.Client:
    global _client, _owner
    if _owner != os.getpid():
        with _lock:
            if _owner != os.getpid():
                _client = httpx.Client(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
                _owner = os.getpid()
    return _client
