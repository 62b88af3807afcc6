"""A demo shop's page with Parley's web chat widget on it, so a person can chat as a website
visitor: `GET /shop/` lists the registered widgets, `GET /shop/<n>/` is a product page carrying
widget n. The page is on the simulator's origin, not Parley's, as a real shop's would be.

Register: `{"kind": "webchat", "name": "...", "script_url": "http://127.0.0.1:8000/widget/<uuid>.js"}`.
"""

from __future__ import annotations

import html
from typing import Any

from .core import ControlError, Provider, Request, Response, Route, route

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:760px;margin:40px auto;padding:0 16px;color:#222}}
.product{{display:flex;gap:24px;align-items:center}}.box{{width:220px;height:220px;background:#e9eef7;border-radius:12px;
display:flex;align-items:center;justify-content:center;font-size:64px}}</style></head>
<body><p><a href="/shop/">Demo shops</a> · a page served by the channel simulator, not by Parley</p>
<h1>{title}</h1>
<div class="product"><div class="box">30 &times;</div>
<div><h2>Farm eggs, 30 pcs</h2><p>EGP 185 · delivered tomorrow</p>
<p>Questions about your order? Use the chat button at the bottom right.</p></div></div>
{body}
</body></html>"""


class WebChat(Provider):
    kind = "webchat"

    def __init__(self, simulator):
        super().__init__(simulator)
        self._widgets: list[dict[str, str]] = []

    def api_routes(self) -> list[Route]:
        return [route("GET", r"/shop/?", self._index), route("GET", r"/shop/(?P<number>\d+)/?", self._shop)]

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        script_url = str(body.get("script_url") or "")
        if not script_url.startswith(("http://", "https://")):
            raise ControlError("a webchat registration needs script_url, the widget's http(s) address")
        widget = {"kind": self.kind, "name": str(body.get("name") or "Web chat"), "script_url": script_url}
        with self.lock:
            self._widgets = [w for w in self._widgets if w["script_url"] != script_url] + [widget]
        return widget

    def channels(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._widgets)

    def reset(self, *, channels: bool) -> None:
        if channels:
            with self.lock:
                self._widgets = []

    def _index(self, request: Request) -> Response:
        items = "".join(
            f'<li><a href="/shop/{n}/">{html.escape(w["name"])}</a></li>' for n, w in enumerate(self.channels())
        )
        body = f"<ul>{items}</ul>" if items else "<p>No web chat widgets registered.</p>"
        return Response(200, PAGE.format(title="Demo shops", body=body).encode(), "text/html; charset=utf-8")

    def _shop(self, request: Request, number: str) -> Response:
        widgets = self.channels()
        if int(number) >= len(widgets):
            raise ControlError(f"no web chat widget {number}", 404)
        widget = widgets[int(number)]
        tag = f'<script src="{html.escape(widget["script_url"])}" async></script>'
        page = PAGE.format(title=html.escape(widget["name"]), body=tag)
        return Response(200, page.encode(), "text/html; charset=utf-8")
