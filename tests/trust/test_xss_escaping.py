"""Hostile text is escaped on the server: every page of the project (walked from the URL conf,
as the isolation matrix walks it) is fetched by the owner of a workspace whose every text is an
XSS payload (tests/trust/hostile.py). No HTML page contains a payload's live markup or a
`javascript:` link; every other answer is JSON or a file with `nosniff`, which a browser never
renders as a page. What happens in a real browser is test_xss_browser.py."""

import json
import re

import pytest
from django.db import transaction
from django.test import override_settings

from tests.trust.hostile import HOSTILE, MARKER, RAW, build_hostile, signed_in
from tests.trust.isolation import Obj, Open, routes_with_plans
from tests.trust.test_isolation_matrix import body_of, values_for

pytestmark = pytest.mark.django_db


def _reads(plan) -> bool:
    if isinstance(plan, Open):
        return plan.method == "get"
    return isinstance(plan, Obj) and plan.label is not None and "get" in plan.mapped


PAGES = [(route, plan) for route, plan in routes_with_plans() if _reads(plan)]


@pytest.fixture(scope="module")
def hostile(django_db_setup, django_db_blocker, tmp_path_factory):
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("media")),
        transaction.atomic(),
    ):
        built = build_hostile()
        built.client = signed_in(built.tenant.owner)
        yield built
        transaction.set_rollback(True)


def _live_markup(html: str) -> list[str]:
    found = [raw for raw in RAW if raw in html]
    found += re.findall(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", html, flags=re.IGNORECASE)
    return found


@pytest.mark.parametrize(("route", "plan"), PAGES, ids=[route.key for route, _ in PAGES])
def test_no_page_shows_hostile_text_as_markup(hostile, route, plan):
    url = route.url(values_for(route, plan, hostile.tenant))
    response = hostile.client.get(url, follow=getattr(plan, "follow", False))
    body = body_of(response)
    content_type = response.get("Content-Type", "")

    assert response.status_code < 500, f"{url}: {response.status_code}"
    if content_type.startswith("text/html"):
        assert not _live_markup(body), f"{url} shows hostile text as markup: {_live_markup(body)}"
        assert "Content-Security-Policy" in response
    else:
        assert response["X-Content-Type-Options"] == "nosniff", url


def test_the_pages_a_person_reads_show_the_payloads_as_text(hostile):
    """The sweep above would pass on pages that show nothing: these show the texts, escaped."""
    tenant = hostile.tenant
    escaped = "&quot;&#x27;&gt;&lt;img src=x onerror=alert(1)&gt;"
    pages = {
        "/admin/contacts/contact/": MARKER,
        f"/admin/contacts/contact/{tenant.get('contacts.contact').pk}/change/": HOSTILE,
        "/admin/conversations/quickreply/": HOSTILE,
        "/admin/contacts/tag/": MARKER,
        "/admin/workflows/workflow/": MARKER,
        f"/admin/workflows/workflow/{tenant.get('workflows.workflow').pk}/change/": MARKER,
        "/admin/broadcasts/campaign/": MARKER,
        f"/admin/connectors/messagetemplate/{tenant.get('connectors.messagetemplate').pk}/change/": MARKER,
        "/analytics/": MARKER,
    }
    for url, _text in pages.items():
        response = hostile.client.get(url)
        assert response.status_code == 200, url
        assert escaped in response.content.decode(), f"{url} does not show the payload as text"


def test_the_inbox_hands_its_data_to_the_script_as_json_that_cannot_close_the_script_tag(hostile):
    page = hostile.client.get("/inbox/").content.decode()

    data = re.search(r'<script id="inbox-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert data is not None
    assert "<" not in data.group(1) and ">" not in data.group(1)  # json_script writes \u003C
    assert json.loads(data.group(1))["me"]["name"] == MARKER


def test_the_api_answers_hostile_text_as_json_verbatim(hostile):
    tenant = hostile.tenant
    response = hostile.client.get(f"/api/v1/contacts/{tenant.get('contacts.contact').pk}/")

    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.json()["name"] == f"Amira {HOSTILE}"


def test_an_emails_html_is_kept_only_as_sanitised_markup(hostile):
    message = hostile.email_conversation.messages.filter(direction="in").latest("id")
    html = message.payload["html"]

    assert not _live_markup(html), html
    assert "<script" not in html and "onerror" not in html and "<iframe" not in html and "<form" not in html
    assert message.payload["subject"] == f"Subject {HOSTILE}"  # the subject stays text, shown as text


def test_a_hostile_path_in_a_404_page_is_escaped(hostile):
    response = hostile.client.get("/admin/%3Cimg%20src=x%20onerror=alert(1)%3E/")

    assert response.status_code == 404
    assert not _live_markup(response.content.decode())
