"""The tenant isolation matrix: every URL pattern of the project, walked from the URL conf, asked
by workspace B's owner (signed in, and with B's API token) for workspace A's objects. B gets 404
(403 where only superusers may look at all) for every method, and no response of B's ever holds
A's marker; A's own owner reaches the same URLs, so the matrix cannot pass by everything being
404. A new pattern needs no new test: it is planned from its viewset or ModelAdmin, or the first
test here names what to add to tests/trust/isolation.py. The websocket's half is in
test_isolation_realtime.py; how it all works is in docs/security.md ("Tenant isolation")."""

import json

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, override_settings
from django.urls import resolve
from rest_framework.relations import RelatedField

from apps.core.api.serializers import WorkspaceRelatedField
from tests.trust.isolation import (
    ROUTES,
    UNSAFE,
    WEBSOCKET_ROUTES,
    NoPlan,
    Obj,
    Open,
    Public,
    plan_for,
    routes_with_plans,
    url_routes,
    websocket_routes,
)
from tests.trust.world import MARKER_A, MARKER_B, build_world

pytestmark = pytest.mark.django_db

PLANNED = routes_with_plans()
CHECKED = [(route, plan) for route, plan in PLANNED if not isinstance(plan, Public)]
OBJECT_ROUTES = [(route, plan) for route, plan in PLANNED if isinstance(plan, Obj)]


def _id(item) -> str:
    return item[0].key


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """Both workspaces' objects, made once for the module inside a transaction rolled back at its
    end; each test runs in a savepoint of it, so a write that should have been refused is undone."""
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("media")),
        transaction.atomic(),
    ):
        built = build_world()
        built.clients = {
            "a": _signed_in(built.a.owner),
            "b": _signed_in(built.b.owner),
            "a token": _with_token(built.a.token),
            "b token": _with_token(built.b.token),
        }
        yield built
        transaction.set_rollback(True)


def _signed_in(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _with_token(token: str) -> Client:
    return Client(raise_request_exception=False, headers={"Authorization": f"Bearer {token}"})


def body_of(response) -> str:
    # A streamed body is read to its end, which is where the test client closes it.
    content = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
    return content.decode("utf-8", "replace")


def ask(client, method: str, url: str, *, follow: bool = False):
    if method == "get":
        return client.get(url, follow=follow)
    return getattr(client, method)(url, data="{}", content_type="application/json", follow=follow)


def values_for(route, plan, tenant) -> dict:
    """The pattern's parameters filled with the tenant's object (or the plan's constants)."""
    values = dict(plan.constants)
    obj = tenant.get(plan.label) if isinstance(plan, Obj) and plan.label else None
    for name in route.params:
        if name in values:
            continue
        if name == "content_type_id":
            values[name] = ContentType.objects.get_for_model(obj).pk
        elif name == "slug":
            values[name] = obj.slug
        elif name in ("attachment_uuid", "channel_uuid"):
            values[name] = obj.uuid
        else:
            values[name] = obj.pk
    return values


def identities(plan, side: str) -> list[str]:
    return [side, f"{side} token"] if plan.api else [side]


def leaked(response, marker: str = MARKER_A) -> bool:
    return marker in body_of(response)


# The map is complete ---------------------------------------------------------------------------


def test_every_url_pattern_has_a_plan():
    missing = []
    for route in url_routes():
        try:
            plan_for(route)
        except NoPlan as error:
            missing.append(str(error))
    assert not missing, "\n".join(missing)


def test_no_plan_names_a_pattern_that_is_gone():
    keys = {route.key for route in url_routes()}
    assert not set(ROUTES) - keys, f"remove from ROUTES in tests/trust/isolation.py: {sorted(set(ROUTES) - keys)}"


def test_every_websocket_route_is_covered():
    routes = set(websocket_routes())
    assert routes <= set(WEBSOCKET_ROUTES), (
        f"new websocket route(s) {sorted(routes - set(WEBSOCKET_ROUTES))}: add a cross-workspace test to "
        "tests/trust/test_isolation_realtime.py and name it in WEBSOCKET_ROUTES (tests/trust/isolation.py)"
    )
    assert set(WEBSOCKET_ROUTES) <= routes, f"remove from WEBSOCKET_ROUTES: {sorted(set(WEBSOCKET_ROUTES) - routes)}"


def test_every_object_a_plan_names_is_in_the_world(world):
    labels = {plan.label for _, plan in OBJECT_ROUTES if plan.label}
    absent = sorted(labels - set(world.a.objects))
    assert not absent, f"add an object of {absent} to populate() in tests/trust/world.py (with the marker in a text)"


# B never gets A's; A gets its own -----------------------------------------------------------------

SHOWN = {}  # route key -> whether A's own page showed A's marker (read by the last test)


def _pending(plan):
    if plan.pending:
        pytest.xfail(f"pending: {plan.pending}")


@pytest.mark.parametrize(("route", "plan"), CHECKED, ids=[_id(item) for item in CHECKED])
def test_b_never_gets_as_object_or_data_and_a_does(world, route, plan):
    """B's owner, signed in and by token, is refused A's object by every method and never sees A's
    marker; A's owner (and token) reaches the very same URL, so B's 404 is the scope at work."""
    _pending(plan)
    url = route.url(values_for(route, plan, world.a))
    assert resolve(url).func == route.callback, f"{url} does not reach {route.pattern}"
    failures = _as_b(world, plan, url)
    if isinstance(plan, Obj):
        failures += _bs_own(world, route, plan) + _as_a(world, route, plan, url)
    assert not failures, "\n".join(failures)


def _as_b(world, plan, url) -> list[str]:
    failures = []
    methods = plan.methods if isinstance(plan, Obj) else (plan.method,)
    for who in identities(plan, "b"):
        for method in methods:
            response = ask(world.clients[who], method, url, follow=getattr(plan, "follow", False))
            expected = _refusals(plan, method)
            if response.status_code not in expected:
                failures.append(f"{who} {method.upper()} {url}: {response.status_code}, expected {expected}")
            if leaked(response):
                failures.append(f"{who} {method.upper()} {url}: the body holds A's data ({MARKER_A})")
    return failures


def _refusals(plan, method: str) -> tuple:
    if isinstance(plan, Open):
        return plan.allowed
    if method not in plan.mapped:
        return (*plan.refused, 405)  # the route has no such method: 405 once the permission check passed
    return plan.refused


def _as_a(world, route, plan, url) -> list[str]:
    failures = []
    if plan.label is None:
        return failures  # a superuser-only page of a row no workspace owns
    for who in identities(plan, "a"):  # reads: every identity
        response = ask(world.clients[who], "get", url, follow=plan.follow)
        expected = plan.ok if "get" in plan.mapped else (405,)
        if who.endswith("token") and plan.token_ok is not None:
            expected = plan.token_ok
        if response.status_code not in expected:
            failures.append(f"{who} GET {url}: {response.status_code}, expected {expected}: {body_of(response)[:300]}")
        elif who == "a" and response.status_code == 200:
            SHOWN[route.key] = leaked(response)
    writer = identities(plan, "a")[-1]  # writes: once, the deletion last (it may well succeed)
    for method in sorted(set(plan.mapped) - {"get"} - set(plan.owner_skips), key=list(UNSAFE).index):
        response = ask(world.clients[writer], method, url, follow=plan.follow)
        if response.status_code == 404 or response.status_code >= 500:
            failures.append(f"{writer} {method.upper()} {url}: {response.status_code}")
    return failures


def _bs_own(world, route, plan) -> list[str]:
    """B's own object's page, where a form's choices or a related list could drag A's rows in."""
    if plan.label is None or "get" not in plan.mapped:
        return []
    url = route.url(values_for(route, plan, world.b))
    response = ask(world.clients["b"], "get", url, follow=plan.follow)
    return [f"b GET {url} (B's own): the body holds A's data ({MARKER_A})"] if leaked(response) else []


REVERSE_SAMPLE = (
    "conversation-detail",
    "conversation-messages",
    "contact-timeline",
    "message-detail",
    "broadcast-stats",
    "workflow-export",
    "attachment",
    "admin:contacts_contact_change",
    "admin:conversations_message_change",
    "admin:broadcasts_broadcast_export",
    "admin:workflows_workflow_try_state",
    "admin:connectors_messagetemplate_preview",
)


def test_a_never_gets_bs_objects_either(world):
    planned = dict((route.key, (route, plan)) for route, plan in OBJECT_ROUTES)
    failures = []
    for key in REVERSE_SAMPLE:
        route, plan = planned[key]
        url = route.url(values_for(route, plan, world.b))
        for who in identities(plan, "a"):
            response = ask(world.clients[who], "get", url)
            if response.status_code != 404 or leaked(response, MARKER_B):
                failures.append(f"{who} GET {url}: {response.status_code}")
    assert not failures, "\n".join(failures)


def test_most_of_as_pages_show_as_marker_so_the_marker_check_means_something():
    """Run after the matrix (pytest keeps the file's order): if A's own pages did not show A's
    marker, B's pages not showing it would prove little."""
    if len(SHOWN) < len([1 for _, plan in OBJECT_ROUTES if 200 in plan.ok]) // 2:
        pytest.skip("run with the whole matrix")
    assert sum(SHOWN.values()) >= len(SHOWN) // 2, sorted(key for key, shown in SHOWN.items() if not shown)


# What a URL's parameters cannot say: A's rows named in query strings, bodies and signed links ---


def _query_probes(world) -> list[tuple[str, str]]:
    a, b = world.a, world.b
    team, agent, channel = (
        a.get("workspaces.team").pk,
        a.get("workspaces.membership").pk,
        a.get("connectors.channel").pk,
    )
    template_b = b.get("connectors.messagetemplate").pk
    return [
        *(
            (who, f"{path}?{name}={value}")
            for path in ("/analytics/", "/analytics/conversations/", "/api/v1/reports/summary/")
            for name, value in (("team", team), ("agent", agent), ("channel", channel))
            for who in ("b", "b token")
            if who == "b" or path.startswith("/api/")
        ),
        ("b token", f"/api/v1/reports/conversations/?team={team}"),
        ("b token", f"/api/v1/reports/export/?channel={channel}"),
        ("b token", f"/api/v1/conversations/?team={team}"),
        ("b token", f"/api/v1/conversations/?assignee={agent}"),
        ("b token", f"/api/v1/agents/?team={team}"),
        ("b token", f"/api/v1/orders/?contact={a.get('contacts.contact').pk}"),
        ("b token", f"/api/v1/workflow-runs/?conversation={a.get('conversations.conversation').pk}"),
        ("b token", f"/api/v1/templates/?channel={channel}"),
        ("b", f"/admin/connectors/messagetemplate/{template_b}/preview/?contact={a.get('contacts.contact').pk}"),
    ]


def test_query_parameters_naming_as_rows_show_b_nothing_of_a(world):
    failures = []
    for who, url in _query_probes(world):
        response = world.clients[who].get(url)
        if response.status_code not in (200, 400) or leaked(response):
            failures.append(f"{who} GET {url}: {response.status_code}{' with A data' if leaked(response) else ''}")
    assert not failures, "\n".join(failures)


def test_bs_session_naming_a_in_the_workspace_header_is_404(world):
    response = world.clients["b"].get("/api/v1/conversations/", headers={"X-Parley-Workspace": "alpha"})

    assert response.status_code == 404
    assert not leaked(response)


def _body_probes(world) -> list[tuple[str, str, dict]]:
    a, b = world.a, world.b
    conversation_b, contact_b = b.get("conversations.conversation").pk, b.get("contacts.contact").pk
    return [
        ("post", f"/api/v1/conversations/{conversation_b}/assign/", {"assignee": a.get("workspaces.membership").pk}),
        ("post", f"/api/v1/conversations/{conversation_b}/assign/", {"team": a.get("workspaces.team").pk}),
        ("patch", f"/api/v1/conversations/{conversation_b}/", {"tags": [a.get("contacts.tag").pk]}),
        ("post", f"/api/v1/contacts/{contact_b}/merge/", {"duplicate": a.get("contacts.contact").pk}),
        ("post", f"/api/v1/contacts/{contact_b}/tags/", {"tags": [a.get("contacts.tag").pk]}),
        ("post", "/api/v1/messages/", {"contact": a.get("contacts.contact").pk, "text": "hi"}),
        ("post", "/api/v1/orders/", {"external_id": "o-1", "contact": a.get("contacts.contact").pk}),
        (
            "post",
            "/api/v1/shifts/",
            {"team": a.get("workspaces.team").pk, "weekday": 1, "starts_at": "09:00", "ends_at": "17:00"},
        ),
        ("post", "/api/v1/teams/", {"name": "Raiders", "members": [a.get("workspaces.membership").pk]}),
        (
            "post",
            f"/api/v1/workflows/{b.get('workflows.workflow').pk}/start/",
            {"conversation": a.get("conversations.conversation").pk},
        ),
        (
            "post",
            "/api/v1/broadcasts/",
            {
                "name": "Raid",
                "channel": a.get("connectors.channel").pk,
                "template": a.get("connectors.messagetemplate").pk,
                "audience": "segment",
                "segment": a.get("broadcasts.segment").pk,
            },
        ),
        (
            "post",
            "/api/v1/segments/count/",
            {
                "definition": {
                    "match": "all",
                    "conditions": [{"field": "channel", "op": "has", "value": a.get("connectors.channel").pk}],
                }
            },
        ),
    ]


def test_request_bodies_naming_as_rows_are_refused(world):
    failures = []
    for method, url, body in _body_probes(world):
        for who in ("b", "b token"):
            response = getattr(world.clients[who], method)(url, data=json.dumps(body), content_type="application/json")
            if response.status_code not in (400, 404) or leaked(response):
                failures.append(
                    f"{who} {method.upper()} {url} {body}: {response.status_code} {body_of(response)[:200]}"
                )
    assert not failures, "\n".join(failures)


def test_marking_as_notifications_read_from_b_reads_none(world):
    notification = world.a.get("conversations.notification")

    answer = world.clients["b"].post(
        "/api/v1/notifications/read/", {"ids": [notification.pk]}, content_type="application/json"
    )

    assert answer.json() == {"read": 0}
    notification.refresh_from_db()
    assert notification.read_at is None


def test_counting_in_the_segment_admin_for_as_workspace_or_segment_is_404(world):
    client, count = world.clients["b"], "/admin/broadcasts/segment/count/"
    definition = json.dumps({"match": "all", "conditions": [{"field": "language", "op": "is", "value": "en"}]})
    for body in ({"workspace": world.a.workspace.pk}, {"object_id": world.a.get("broadcasts.segment").pk}):
        response = client.post(count, json.dumps({"definition": definition, **body}), content_type="application/json")
        assert response.status_code == 404, body


def test_syncing_as_channels_templates_from_bs_admin_is_404(world):
    response = world.clients["b"].post(
        "/admin/connectors/messagetemplate/sync/", {"channel": world.a.get("connectors.channel").pk}
    )

    assert response.status_code == 404


# Public endpoints: what makes them safe -------------------------------------------------------


def test_webhook_of_a_without_its_signature_is_refused(world):
    from apps.conversations.models import InboundEvent

    channel = world.a.get("connectors.channel")
    before = InboundEvent.objects.count()

    response = world.clients["b"].post(
        f"/webhooks/{channel.uuid}/", {"object": "whatsapp_business_account"}, content_type="application/json"
    )

    assert response.status_code == 401
    assert InboundEvent.objects.count() == before


def test_widget_upload_to_a_needs_a_visitor_of_a(world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.connectors.services import Visitor, visitor_token

    token_of_b = visitor_token(world.b.get("webchat"), Visitor(id="visitor-b"))
    upload = SimpleUploadedFile("a.png", b"\x89PNG\r\n\x1a\n", "image/png")

    response = Client().post(
        f"/widget/{world.a.get('webchat').uuid}/uploads/",
        {"file": upload},
        headers={"X-Parley-Visitor": token_of_b, "Origin": "http://shop.test"},
    )

    assert response.status_code == 401


def test_widget_file_of_a_needs_its_signed_link(world):
    from django.core import signing

    from apps.connectors.providers.webchat import FILE_SALT

    attachment = world.a.get("conversations.attachment")
    url = f"/widget/{world.a.get('webchat').uuid}/files/{attachment.uuid}/"
    someone_elses = signing.dumps({"a": str(attachment.uuid), "v": "visitor-b"}, salt=FILE_SALT, compress=True)

    assert world.clients["b"].get(url).status_code == 404
    assert Client().get(f"{url}?t={someone_elses}").status_code == 404


# The API's foreign keys in request bodies are all scoped ------------------------------------------


def _api_serializers():
    from rest_framework import serializers

    seen = set()

    def walk(cls):
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("apps.") and sub not in seen:
                seen.add(sub)
                yield sub
            yield from walk(sub)

    return sorted(set(walk(serializers.BaseSerializer)), key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_writable_foreign_key_in_an_api_body_accepts_only_the_workspaces_rows():
    """A related field a client may write must be a WorkspaceRelatedField, or another workspace's
    id would be accepted (a new serializer is checked by simply existing)."""
    unscoped = []
    from rest_framework.serializers import ModelSerializer

    for serializer_class in _api_serializers():
        if issubclass(serializer_class, ModelSerializer) and not hasattr(serializer_class, "Meta"):
            continue  # an abstract base (StrictModelSerializer): its subclasses are checked
        for name, field in serializer_class(context={}).fields.items():
            related = getattr(field, "child_relation", field)
            if (
                isinstance(related, RelatedField)
                and not field.read_only
                and not isinstance(related, WorkspaceRelatedField)
            ):
                unscoped.append(f"{serializer_class.__module__}.{serializer_class.__qualname__}.{name}")
    assert not unscoped, f"use WorkspaceRelatedField for: {unscoped}"


# Fixed defects, each pinned ----------------------------------------------------------------------


def test_the_admins_person_pickers_offer_only_people_of_the_workspaces_administered(world):
    """The membership form and the workspace's members inline listed every account there is."""
    client = world.clients["b"]
    for url in ("/admin/workspaces/membership/add/", f"/admin/workspaces/workspace/{world.b.workspace.pk}/change/"):
        page = body_of(client.get(url))

        assert world.b.agent.username in page, url
        assert world.a.owner.username not in page and world.a.agent.username not in page, url
