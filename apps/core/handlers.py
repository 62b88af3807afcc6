"""Django's request handler as WSGI runs it, under ASGI: each request on one of a few long-lived
threads, from its first middleware to its response.

Django's own ASGIHandler serves a synchronous view (all of Parley's are) by hopping between the
event loop and a thread made for the request: once for each middleware's process_request and
once for its process_response (MiddlewareMixin.__acall__), again for the request signals and for
the view. On the busy day (bench/busy_day.py) those hops and the thread made per request were
half of what an operator's reply cost a web process, the reply's own work the other half. Here
the whole request is one hop, and its response's bytes go back to the event loop to be sent. The
connection to PostgreSQL is borrowed and given back on that one thread (request_started and
request_finished run there), as under WSGI.

A streamed response (an export, a file) is read on the request's thread, which holds the
database connection and so any server-side cursor the stream reads, and each piece is sent from
the event loop as it comes: a download in progress keeps one thread, as it keeps a worker under
WSGI. Django's ASGIHandler is still what `django.core.asgi` and the async test client use; its
stream is an async iterator (apps.analytics.api.views.streamed)."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponseServerError
from django.urls import set_script_prefix

logger = logging.getLogger(__name__)


class ThreadedRequest(ASGIRequest):
    """A request served whole on one thread: its streamed responses may be synchronous."""


class ThreadedASGIHandler(ASGIHandler):
    request_class = ThreadedRequest

    def __init__(self, threads: int):
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)  # the chain as WSGI has it: no hop between middleware
        self.threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self.threads, self._respond, scope, body_file, loop, receive, send)
        except Exception:  # the handler turns a view's exception into a response; this is past it
            logger.exception("the request to %s failed outside its view", scope.get("path"))
            response = HttpResponseServerError("Internal Server Error", content_type="text/plain")
        if response is not None:  # None: streamed from the request's thread
            await self.send_response(response, send)

    def _respond(self, scope, body_file, loop, receive, send):
        """On a request thread: the response, closed (its request_finished has run); or None when
        it was streamed from here."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = None
        try:
            request, response = self.create_request(scope, body_file)
            if request is not None:
                response = self.get_response(request)
                response._handler_class = self.__class__
            if not response.streaming:
                return response
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
            self._stream(response, loop, receive, send)
            return None
        finally:
            if response is not None:
                response.close()  # request_finished: the connection goes back, on this thread
            else:
                signals.request_finished.send(sender=self.__class__)
            body_file.close()

    def _stream(self, response, loop, receive, send) -> None:
        """Sends each piece as it is read; a client gone stops the reading (the response's close
        then ends the cursor and its transaction)."""

        def sent(message: dict) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        gone = asyncio.run_coroutine_threadsafe(self._disconnected(receive), loop)
        try:
            self._pieces(response, sent, gone)
        except Exception:  # its status went out with the first piece: too late for a 500
            logger.exception("a streamed response broke off")
        finally:
            gone.cancel()

    async def _disconnected(self, receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def _pieces(self, response, sent, gone) -> None:
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
        headers += [
            (b"Set-Cookie", cookie.output(header="").encode("ascii").strip()) for cookie in response.cookies.values()
        ]
        sent({"type": "http.response.start", "status": response.status_code, "headers": headers})
        for part in response:
            if gone.done():
                return
            for chunk, _ in self.chunk_bytes(part):
                sent({"type": "http.response.body", "body": chunk, "more_body": True})
        sent({"type": "http.response.body"})
