"""Every page Parley serves sends a Content-Security-Policy that lets only Parley's own script
files run (no inline script, no inline handler, no eval), and the pages carry nothing that such
a policy would refuse: their scripts are files, their data is JSON in `json_script` tags. The
browser tests (tests/browser) fail on any violation a real page reports."""

from html.parser import HTMLParser

import pytest
from django.conf import settings

from apps.connectors.models import Channel
from apps.workflows.definition import workflow_import
from apps.workspaces.models import Role
from tests.conftest import client_for
from tests.factories import make_member, make_workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    workspace = make_workspace(slug="csp-shop")
    owner = make_member(workspace, Role.OWNER)
    workflow = workflow_import(
        workspace=workspace,
        definition={
            "name": "Greeting",
            "trigger": "api",
            "steps": [{"key": "hi", "kind": "message", "settings": {"text": "Hi"}}],
        },
    )
    channel = Channel.objects.create(workspace=workspace, kind="webchat", name="Website")
    return owner.user, workflow, channel


def pages(workflow, channel) -> dict[str, bool]:
    """Each page, and whether it is HTML (the widget is a script for the shop's own page)."""
    admin_workflow = f"/admin/workflows/workflow/{workflow.pk}"
    return {
        "/": True,
        "/inbox/": True,
        "/analytics/": True,
        "/account/password/": True,
        "/admin/": True,
        "/admin/contacts/contact/": True,
        "/admin/workflows/workflow/": True,
        f"{admin_workflow}/change/": True,
        f"{admin_workflow}/try/": True,
        "/admin/workflows/workflow/import/": True,
        "/admin/broadcasts/segment/add/": True,
        "/api/v1/docs/": True,
        "/api/v1/conversations/": False,
        f"/widget/{channel.uuid}.js": False,
    }


def policy_of(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


class InlineCode(HTMLParser):
    """Collects what a strict script-src refuses: <script> with a body but no src (JSON data
    excepted), on* attributes and javascript: links."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._script: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.found += [f"<{tag} {name}=…>" for name in attributes if name.startswith("on")]
        self.found += [
            f"<{tag} {name}={value}>"
            for name, value in attributes.items()
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:")
        ]
        if tag == "script":
            self._script = attributes

    def handle_data(self, data):
        script = self._script
        if script is not None and data.strip() and "src" not in script and script.get("type") != "application/json":
            self.found.append(f"inline <script>: {data.strip()[:80]}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def test_every_page_sends_a_policy_that_runs_only_parleys_own_script_files(shop):
    user, workflow, channel = shop
    client = client_for(user)
    anonymous = {"/login/": client.__class__(), "/admin/login/": client.__class__()}

    for url in [*pages(workflow, channel), *anonymous]:
        response = (anonymous.get(url) or client).get(url)
        assert response.status_code == 200, url
        policy = policy_of(response)
        assert policy["script-src"] == ["'self'"], url
        assert policy["default-src"] == ["'self'"], url
        assert policy["object-src"] == ["'none'"], url
        assert policy["base-uri"] == ["'self'"], url
        assert policy["frame-ancestors"] == ["'none'"], url
        assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]


def test_the_policy_lets_pages_reach_parleys_own_websocket(shop):
    user, *_ = shop

    policy = policy_of(client_for(user).get("/inbox/"))

    scheme = "wss" if settings.PUBLIC_URL.startswith("https") else "ws"
    assert f"{scheme}://{settings.PUBLIC_URL.split('://', 1)[1]}" in policy["connect-src"]
    assert "'self'" in policy["connect-src"]


def test_error_pages_send_the_policy_too(shop):
    user, *_ = shop

    response = client_for(user).get("/no/such/page/")

    assert response.status_code == 404
    assert policy_of(response)["script-src"] == ["'self'"]


def test_no_page_carries_inline_script_or_handlers(shop):
    user, workflow, channel = shop
    client = client_for(user)

    for url, is_html in pages(workflow, channel).items():
        if not is_html:
            continue
        parser = InlineCode()
        parser.feed(client.get(url).content.decode())
        assert not parser.found, f"{url}: {parser.found}"
