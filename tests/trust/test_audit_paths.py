"""Every way a person changes workflows, channels, webhook subscriptions, API tokens and roles,
and every way they see a contact in the admin, leaves an audit entry: the paths the first audit
work missed (the workflow import page, trying a workflow, the workflows API, reconnecting a
channel, webhook subscriptions, people's accounts, merges, a contact page shown again after a
refused save). The inventory is in docs/security.md, "Audit log"."""

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client

from apps.connectors.models import Channel, WebhookSubscription
from apps.contacts.models import Contact
from apps.contacts.services import contact_resolve
from apps.workflows.models import Workflow
from apps.workspaces.models import ApiToken, AuditEntry
from tests.conftest import client_for, token_client
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import make_user

pytestmark = pytest.mark.django_db

WORKFLOWS = "/admin/workflows/workflow/"


def definition(name: str = "Greeting", **fields) -> dict:
    return {
        "name": name,
        "trigger": "conversation_opened",
        "start_step": "hello",
        "steps": [{"key": "hello", "kind": "message", "settings": {"text": "Hello!"}, "next": ""}],
        **fields,
    }


def entries(**filters) -> list[tuple]:
    rows = AuditEntry.objects.filter(**filters).order_by("id")
    return list(rows.values_list("actor_label", "action", "object_type", "details"))


def logged() -> str:
    return json.dumps(list(AuditEntry.objects.values()), default=str)


# Workflows -------------------------------------------------------------------------------------


def test_workflows_imported_on_the_admin_page_are_recorded_as_created_then_replaced(tenants):
    supervisor = client_for(tenants.supervisor)
    text = json.dumps([definition(), definition("Goodbye")])

    for _ in range(2):
        response = supervisor.post(f"{WORKFLOWS}import/", {"workspace": tenants.a.pk, "text": text})
        assert response.status_code == 302

    greeting = Workflow.objects.get(name="Greeting")
    who = tenants.supervisor.username
    assert entries(object_type="workflow", object_id=greeting.pk) == [
        (who, "create", "workflow", {"imported": True, "version": 1}),
        (who, "change", "workflow", {"imported": True, "version": 1}),
    ]
    assert AuditEntry.objects.filter(object_type="workflow", action="create").count() == 2
    assert {entry.workspace_id for entry in AuditEntry.objects.filter(object_type="workflow")} == {tenants.a.pk}


def test_a_refused_import_records_nothing(tenants):
    broken = json.dumps(definition(start_step="nowhere"))

    response = client_for(tenants.supervisor).post(f"{WORKFLOWS}import/", {"workspace": tenants.a.pk, "text": broken})

    assert response.status_code == 200
    assert not Workflow.objects.exists()
    assert not AuditEntry.objects.filter(object_type="workflow").exists()


def test_trying_an_unpublished_workflow_records_its_publication_and_the_sandbox_channel(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Draft", trigger="conversation_opened")
    supervisor = client_for(tenants.supervisor)

    assert supervisor.get(f"{WORKFLOWS}{workflow.pk}/try/").status_code == 200
    supervisor.post(f"{WORKFLOWS}{workflow.pk}/try/restart/")
    supervisor.post(f"{WORKFLOWS}{workflow.pk}/try/restart/")  # published already: nothing more

    who = tenants.supervisor.username
    sandbox = Channel.objects.get(workspace=tenants.a, kind="sandbox")
    assert entries(object_type="channel") == [(who, "create", "channel", {"try_it": True})]
    assert AuditEntry.objects.get(object_type="channel").object_id == str(sandbox.pk)
    assert entries(object_type="workflow") == [(who, "change", "workflow", {"published": 1})]


def test_switching_a_workflow_through_the_api_is_recorded_under_the_token_and_a_no_op_is_not(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Greeting", trigger="conversation_opened")
    api = token_client(tenants.token_a)

    for enabled in (False, False, True):
        response = api.patch(
            f"/api/v1/workflows/{workflow.pk}/", {"enabled": enabled}, content_type="application/json"
        )
        assert response.status_code == 200

    assert entries(object_type="workflow") == [
        ("API token order system", "change", "workflow", {"enabled": False}),
        ("API token order system", "change", "workflow", {"enabled": True}),
    ]
    assert tenants.token_a not in logged()


def test_a_supervisor_switching_a_workflow_through_the_api_is_named(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Greeting", trigger="conversation_opened")

    client_for(tenants.supervisor).patch(
        f"/api/v1/workflows/{workflow.pk}/", {"enabled": False}, content_type="application/json"
    )

    entry = AuditEntry.objects.get(object_type="workflow")
    assert (entry.actor, entry.workspace) == (tenants.supervisor, tenants.a)


def test_workflows_imported_through_the_api_are_recorded_and_a_refused_one_is_not(tenants):
    api = token_client(tenants.token_a)

    created = api.post("/api/v1/workflows/import/", definition(), content_type="application/json")
    replaced = api.post("/api/v1/workflows/import/", definition(), content_type="application/json")
    refused = api.post("/api/v1/workflows/import/", definition(start_step="x"), content_type="application/json")

    assert (created.status_code, replaced.status_code, refused.status_code) == (201, 200, 400)
    assert [(action, details) for _, action, _, details in entries(object_type="workflow")] == [
        ("create", {"imported": True, "version": 1}),
        ("change", {"imported": True, "version": 1}),
    ]


def test_an_agent_refused_a_workflow_change_leaves_no_entry(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Greeting", trigger="conversation_opened")

    response = client_for(tenants.teammate).patch(
        f"/api/v1/workflows/{workflow.pk}/", {"enabled": False}, content_type="application/json"
    )

    assert response.status_code == 403
    assert not AuditEntry.objects.filter(object_type="workflow").exists()


# Channels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_channel_api_reads_only_so_a_channel_changes_only_where_it_is_audited(tenants, method):
    """The API has no channel writes (create, update, credentials, enabling are the admin's, which
    AuditedAdmin records). Were one added, this fails and reminds its author to audit it."""
    channel = make_whatsapp_channel(tenants.a)
    url = "/api/v1/channels/" if method == "post" else f"/api/v1/channels/{channel.pk}/"

    response = getattr(token_client(tenants.token_a), method)(
        url, {"enabled": False, "credentials": {"access_token": "x"}}, content_type="application/json"
    )

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert Channel.objects.get(pk=channel.pk).enabled


def test_reconnecting_channels_from_the_admin_list_is_recorded(tenants):
    channel = Channel.objects.create(workspace=tenants.a, kind="sandbox", name="Test bench")

    response = client_for(tenants.supervisor).post(
        "/admin/connectors/channel/", {"action": "activate", "_selected_action": [channel.pk]}
    )

    assert response.status_code == 302
    assert entries(object_type="channel") == [
        (tenants.supervisor.username, "change", "channel", {"reconnected": True})
    ]


# Webhook subscriptions (where the workspace's events, customers' messages among them, are sent) --


def test_webhook_subscriptions_written_through_the_api_are_recorded_without_secret_or_query(tenants):
    api = token_client(tenants.token_a)
    body = {"url": "https://crm.example.com/hooks/parley?key=crm-access-key", "events": ["message.created"]}

    created = api.post("/api/v1/webhooks/", body, content_type="application/json")
    pk = created.json()["id"]
    api.patch(f"/api/v1/webhooks/{pk}/", {"enabled": False, "events": ["message.created"]}, "application/json")
    api.delete(f"/api/v1/webhooks/{pk}/")

    assert created.status_code == 201
    assert [(action, details) for _, action, _, details in entries(object_type="webhooksubscription")] == [
        ("create", {"events": ["message.created"]}),
        ("change", {"changed": ["enabled"]}),
        ("delete", {}),
    ]
    assert {e.object_repr for e in AuditEntry.objects.filter(object_type="webhooksubscription")} == {
        "https://crm.example.com/hooks/parley"
    }
    assert "crm-access-key" not in logged() and created.json()["secret"] not in logged()


def test_webhook_subscriptions_written_in_the_admin_are_recorded(tenants):
    supervisor = client_for(tenants.supervisor)
    form = {"workspace": tenants.a.pk, "url": "https://crm.example.com/in", "events": ["message.created"]}

    response = supervisor.post("/admin/connectors/webhooksubscription/add/", {**form, "enabled": "on"})
    subscription = WebhookSubscription.objects.get()
    supervisor.post(f"/admin/connectors/webhooksubscription/{subscription.pk}/change/", form)  # switched off
    supervisor.post(f"/admin/connectors/webhooksubscription/{subscription.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302, response.content.decode()[:2000]
    actions = [(who, action) for who, action, _, _ in entries(object_type="webhooksubscription")]
    assert actions == [(tenants.supervisor.username, a) for a in ("create", "change", "delete")]
    assert AuditEntry.objects.filter(action="change").get().details["changes"][0]["changed"]["fields"] == ["Enabled"]
    assert subscription.secret not in logged()


# People's accounts and tokens --------------------------------------------------------------------


def test_making_someone_a_superuser_in_the_admin_is_recorded_and_their_password_is_not(tenants):
    root = make_user(username="root", is_superuser=True, is_staff=True)
    person = tenants.teammate
    form = {
        "username": person.username,
        "email": "",
        "language": person.language or "en",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    root_client = client_for(root)

    changed = root_client.post(f"/admin/workspaces/user/{person.pk}/change/", form)
    password = root_client.post(
        f"/admin/workspaces/user/{person.pk}/password/",
        {"password1": "Tr0ub4dor&3-long", "password2": "Tr0ub4dor&3-long", "usable_password": "true"},
    )

    assert (changed.status_code, password.status_code) == (302, 302), changed.content.decode()[:3000]
    change, password_change = AuditEntry.objects.filter(object_type="user").order_by("id")
    assert (change.actor, change.action, change.object_id) == (root, "change", str(person.pk))
    assert {"Staff status", "Superuser status"} <= set(change.details["changes"][0]["changed"]["fields"])
    assert password_change.action == "change" and "Tr0ub4dor" not in logged()


def test_a_token_made_with_the_management_command_is_recorded_as_made_by_nobody_in_particular(tenants):
    out = io.StringIO()

    call_command("create_api_token", "--workspace", "alpha", "--name", "warehouse", stdout=out)

    token = ApiToken.objects.get(name="warehouse")
    entry = AuditEntry.objects.get(object_type="apitoken", object_id=token.pk)
    assert (entry.action, entry.actor, entry.workspace) == ("create", None, tenants.a)
    assert out.getvalue().strip() not in logged()


# Contacts in the admin -------------------------------------------------------------------------


@pytest.fixture
def channel(tenants):
    return make_whatsapp_channel(tenants.a)


@pytest.fixture
def contact(channel):
    return contact_resolve(channel=channel, external_id="201001234567", name="Amira Khalil", phone="+201001234567")


def test_a_contact_page_shown_again_after_a_refused_save_is_a_view(tenants, contact):
    response = client_for(tenants.supervisor).post(
        f"/admin/contacts/contact/{contact.pk}/change/", {"workspace": tenants.a.pk, "custom_fields": "not json"}
    )

    assert response.status_code == 200
    assert b"201001234567" in response.content  # their identities are on the page again
    assert entries(action="view") == [(tenants.supervisor.username, "view", "contact", {})]
    assert "Khalil" not in logged()


def test_merging_contacts_in_the_admin_is_recorded_by_id(tenants, channel, contact):
    twin = contact_resolve(channel=channel, external_id="201009999999", name="Amira K.", phone="+201009999999")

    client_for(tenants.supervisor).post(
        "/admin/contacts/contact/", {"action": "merge_into_oldest", "_selected_action": [contact.pk, twin.pk]}
    )

    assert Contact.objects.get(pk=twin.pk).merged_into_id == contact.pk
    entry = AuditEntry.objects.get(action="change", object_type="contact")
    assert (entry.actor, entry.object_repr, entry.details) == (
        tenants.supervisor,
        f"Contact #{contact.pk}",
        {"merged": twin.pk},
    )
    assert "Amira" not in logged()


def test_merging_contacts_through_the_api_is_recorded_by_id(tenants, channel, contact):
    twin = contact_resolve(channel=channel, external_id="201009999999", name="Amira K.", phone="+201009999999")

    response = client_for(tenants.teammate).post(
        f"/api/v1/contacts/{contact.pk}/merge/", {"duplicate": twin.pk}, content_type="application/json"
    )

    assert response.status_code == 200
    assert entries(object_type="contact") == [(tenants.teammate.username, "change", "contact", {"merged": twin.pk})]


def test_an_anonymous_visitor_changes_nothing_and_leaves_no_entry(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Greeting", trigger="conversation_opened")

    response = Client().patch(f"/api/v1/workflows/{workflow.pk}/", {"enabled": False}, "application/json")

    assert response.status_code == 401
    assert not AuditEntry.objects.filter(object_type="workflow").exists()
