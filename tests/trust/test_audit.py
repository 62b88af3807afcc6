"""The audit log: who signed in (or failed to), who exported, who changed workflows, channels, API
tokens and roles, who looked at a contact in the admin; read by owners only, exported as CSV."""

import csv
import io
import json

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.utils import timezone

from apps.contacts.services import contact_resolve
from apps.workflows.models import Workflow
from apps.workspaces import services
from apps.workspaces.models import ApiToken, AuditEntry, Role
from tests.conftest import client_for
from tests.conversations.whatsapp import make_whatsapp_channel
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def entries(**filters) -> list[tuple]:
    return list(
        AuditEntry.objects.filter(**filters).order_by("id").values_list("actor_label", "action", "object_type")
    )


# Sign-ins ---------------------------------------------------------------------------------------


def test_a_sign_in_is_recorded_for_each_workspace_of_the_person_with_their_address(tenants):
    response = Client(REMOTE_ADDR="203.0.113.7").post(
        "/login/", {"username": tenants.owner.username, "password": PASSWORD}
    )

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="sign_in")
    assert (entry.actor, entry.workspace, entry.ip) == (tenants.owner, tenants.a, "203.0.113.7")


def test_a_failed_sign_in_is_recorded_with_the_name_tried_and_never_the_password(tenants):
    Client().post("/admin/login/", {"username": tenants.teammate.username, "password": "hunter2-wrong"})

    entry = AuditEntry.objects.get(action="sign_in_failed")
    assert (entry.workspace, entry.object_repr, entry.actor) == (tenants.a, tenants.teammate.username, None)
    assert "hunter2" not in json.dumps(list(AuditEntry.objects.values()), default=str)


def test_a_failed_sign_in_by_an_unknown_name_is_kept_for_the_superuser_only(tenants):
    Client().post("/login/", {"username": "nobody-here", "password": "x"})

    assert AuditEntry.objects.get(action="sign_in_failed").workspace is None


# Changes ----------------------------------------------------------------------------------------


def test_a_role_change_records_who_changed_whom_and_from_what(tenants):
    services.membership_set_role(actor=tenants.owner, workspace=tenants.a, user=tenants.teammate, role=Role.SUPERVISOR)

    entry = AuditEntry.objects.get(object_type="membership")
    assert (entry.actor, entry.action, entry.workspace) == (tenants.owner, "change", tenants.a)
    assert entry.details == {"user": tenants.teammate.username, "role": "supervisor", "previous_role": "agent"}


def test_removing_a_member_in_the_admin_is_recorded(tenants):
    membership = tenants.teammate.memberships.get()

    client_for(tenants.owner).post(f"/admin/workspaces/membership/{membership.pk}/delete/", {"post": "yes"})

    assert entries(object_type="membership") == [(tenants.owner.username, "delete", "membership")]


def test_api_tokens_created_and_revoked_in_the_admin_are_recorded(tenants):
    owner = client_for(tenants.owner)

    owner.post("/admin/workspaces/apitoken/add/", {"workspace": tenants.a.pk, "name": "warehouse"})
    token = ApiToken.objects.get(name="warehouse")
    owner.post("/admin/workspaces/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})

    assert entries(object_type="apitoken", object_id=token.pk) == [
        (tenants.owner.username, "create", "apitoken"),
        (tenants.owner.username, "revoke", "apitoken"),
    ]
    assert AuditEntry.objects.filter(object_id=token.pk).first().object_repr == f"warehouse ({token.hint}…)"


def test_a_channel_saved_in_the_admin_is_recorded_with_the_fields_changed_not_their_values(tenants):
    channel = make_whatsapp_channel(tenants.a)
    form = {
        "workspace": tenants.a.pk,
        "kind": "whatsapp",
        "name": "Sales number",
        "enabled": "on",
        "credentials": json.dumps({**channel.credentials, "access_token": "rotated-secret"}),
        "settings": json.dumps(channel.settings),
        "rate_limit_per_second": channel.rate_limit_per_second,
    }

    response = client_for(tenants.supervisor).post(f"/admin/connectors/channel/{channel.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(object_type="channel")
    assert (entry.actor, entry.action, entry.object_id) == (tenants.supervisor, "change", str(channel.pk))
    assert entry.details["changes"][0]["changed"]["fields"] == ["Name", "credentials"]
    assert "rotated-secret" not in json.dumps(entry.details)


def test_a_workflow_disabled_from_the_admin_list_is_recorded(tenants):
    workflow = Workflow.objects.create(workspace=tenants.a, name="Greeting", trigger="first_message")

    client_for(tenants.supervisor).post(
        "/admin/workflows/workflow/", {"action": "disable", "_selected_action": [workflow.pk]}
    )

    entry = AuditEntry.objects.get(object_type="workflow")
    assert (entry.actor, entry.action, entry.details) == (tenants.supervisor, "change", {"enabled": False})


# Looking at a person ----------------------------------------------------------------------------


@pytest.fixture
def contact(tenants):
    channel = make_whatsapp_channel(tenants.a)
    return contact_resolve(channel=channel, external_id="201001234567", name="Amira Khalil", phone="+201001234567")


def test_opening_a_contacts_admin_page_records_a_view_by_id_never_by_name(tenants, contact):
    response = client_for(tenants.supervisor).get(f"/admin/contacts/contact/{contact.pk}/change/")

    assert response.status_code == 200
    entry = AuditEntry.objects.get(action="view")
    assert (entry.actor, entry.object_type) == (tenants.supervisor, "contact")
    assert entry.object_repr == f"Contact #{contact.pk}"


def test_saving_a_contact_in_the_admin_keeps_their_name_out_of_both_logs(tenants, contact):
    form = {
        "workspace": tenants.a.pk,
        "name": "Amira K. Khalil",
        "phone": contact.phone,
        "email": "",
        "external_id": "",
        "language": "",
        "country": "EG",
        "custom_fields": "{}",
        "lifecycle_stage": "lead",
        "marketing_consent": "{}",
        "identities-TOTAL_FORMS": 1,
        "identities-INITIAL_FORMS": 1,
        "identities-0-id": contact.identities.get().pk,
        "identities-0-contact": contact.pk,
        "identities-0-reachable": "on",
    }

    response = client_for(tenants.owner).post(f"/admin/contacts/contact/{contact.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    assert entries(action="change") == [(tenants.owner.username, "change", "contact")]
    logged = json.dumps(list(LogEntry.objects.values()) + list(AuditEntry.objects.values()), default=str)
    assert "Khalil" not in logged and "1001234567" not in logged


def test_the_export_service_signature_the_analytics_export_calls(tenants):
    services.audit_record(
        action=AuditEntry.Action.EXPORT,
        actor=tenants.supervisor,
        workspace_id=tenants.a.pk,
        object_type="report",
        object_repr="Conversations 2025-01-01 to 2025-01-31 (CSV)",
        details={"rows": 120, "format": "csv"},
    )

    assert entries(action="export") == [(tenants.supervisor.username, "export", "report")]


def test_downloading_the_analytics_export_records_who_which_range_and_format(tenants):
    response = client_for(tenants.supervisor).get(
        "/api/v1/reports/export/", {"from": "2025-01-01", "to": "2025-01-31", "format": "xlsx"}
    )
    b"".join(response.streaming_content)

    assert response.status_code == 200
    entry = AuditEntry.objects.get(action="export")
    assert (entry.actor, entry.workspace, entry.object_type) == (tenants.supervisor, tenants.a, "report")
    assert entry.object_repr == "Conversations 2025-01-01 to 2025-01-31 (XLSX)"
    assert entry.details == {"format": "xlsx", "from": "2025-01-01", "to": "2025-01-31"}


def test_an_export_by_api_token_names_the_token_and_a_refused_one_records_nothing(tenants):
    from tests.conftest import token_client

    token_client(tenants.token_a).get("/api/v1/reports/export/", {"format": "csv"})
    refused = client_for(tenants.teammate).get("/api/v1/reports/export/", {"format": "csv"})
    bad = client_for(tenants.supervisor).get("/api/v1/reports/export/", {"format": "pdf"})

    assert (refused.status_code, bad.status_code) == (403, 400)
    [entry] = AuditEntry.objects.filter(action="export")
    assert entry.actor is None and entry.actor_label and entry.workspace == tenants.a
    assert entry.details["format"] == "csv"


def test_a_scheduled_export_is_recorded_with_its_file_and_no_person(tenants, settings, tmp_path):
    from datetime import UTC, datetime

    from apps.analytics.export import exports_run_due
    from apps.analytics.models import Settings

    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }
    Settings.objects.create(workspace=tenants.a, export_enabled=True)

    assert exports_run_due(now=datetime(2026, 12, 2, 12, 0, tzinfo=UTC)) == 1

    entry = AuditEntry.objects.get(action="export")
    assert (entry.actor, entry.workspace, entry.object_type) == (None, tenants.a, "report")
    assert entry.details["scheduled"] is True and entry.details["file"].endswith(".csv")
    # The window ends EXPORT_SETTLE (5 minutes) before the run, for late events to be folded.
    assert entry.object_repr == "Scheduled export 2026-12-01 11:55 to 2026-12-02 11:55 UTC (csv)"


# Who reads the log ------------------------------------------------------------------------------


def test_only_owners_read_the_audit_log_and_only_their_own_workspaces(tenants):
    services.audit_record(action="export", actor=tenants.supervisor, workspace_id=tenants.a.pk, object_type="a-only")
    services.audit_record(action="export", actor=tenants.outsider, workspace_id=tenants.b.pk, object_type="b-only")

    owner_page = client_for(tenants.owner).get("/admin/workspaces/auditentry/").content.decode()
    outsider_page = client_for(tenants.outsider).get("/admin/workspaces/auditentry/").content.decode()

    assert "a-only" in owner_page and "b-only" not in owner_page
    assert "b-only" in outsider_page and "a-only" not in outsider_page
    assert client_for(tenants.supervisor).get("/admin/workspaces/auditentry/").status_code == 403
    assert "auditentry" not in client_for(tenants.supervisor).get("/admin/").content.decode()


def test_nobody_adds_changes_or_deletes_an_audit_entry(tenants):
    entry = services.audit_record(action="export", actor=tenants.owner, workspace_id=tenants.a.pk)
    owner = client_for(tenants.owner)

    assert owner.get("/admin/workspaces/auditentry/add/").status_code == 403
    assert owner.post(f"/admin/workspaces/auditentry/{entry.pk}/change/", {"action": "erase"}).status_code == 403
    assert owner.post(f"/admin/workspaces/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).action == "export"


def test_the_log_filters_by_action_actor_and_date(tenants):
    # Names no CSRF token or icon path can contain by chance ("x2" once appeared in a token).
    services.audit_record(
        action="export", actor=tenants.supervisor, workspace_id=tenants.a.pk, object_repr="exported-by-supervisor"
    )
    services.audit_record(action="view", actor=tenants.owner, workspace_id=tenants.a.pk, object_repr="viewed-by-owner")
    owner = client_for(tenants.owner)
    year = timezone.now().year

    by_action = owner.get("/admin/workspaces/auditentry/?action__exact=export").content.decode()
    by_actor = owner.get(f"/admin/workspaces/auditentry/?actor={tenants.owner.username}").content.decode()
    this_year = owner.get(f"/admin/workspaces/auditentry/?at__year={year}").content.decode()
    last_year = owner.get(f"/admin/workspaces/auditentry/?at__year={year - 1}").content.decode()

    assert "exported-by-supervisor" in by_action and "viewed-by-owner" not in by_action
    assert "viewed-by-owner" in by_actor and "exported-by-supervisor" not in by_actor
    assert "exported-by-supervisor" in this_year and "viewed-by-owner" in this_year
    assert "exported-by-supervisor" not in last_year


def test_owners_export_the_log_as_csv_and_a_formula_stays_text(tenants):
    services.audit_record(action="sign_in_failed", workspace_id=tenants.a.pk, object_repr="=HYPERLINK(evil)")
    services.audit_record(action="export", actor=tenants.owner, workspace_id=tenants.a.pk, object_type="report")
    services.audit_record(action="export", actor=tenants.outsider, workspace_id=tenants.b.pk, object_type="b-only")

    response = client_for(tenants.owner).post(
        "/admin/workspaces/auditentry/", {"action": "export_csv", "select_across": 1, "_selected_action": [0]}
    )

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["at", "workspace", "who", "action"]
    assert {(row[3], row[4]) for row in rows[1:]} >= {("export", "report"), ("sign_in_failed", "")}
    assert "b-only" not in {row[4] for row in rows[1:]} and {row[1] for row in rows[1:]} == {"alpha"}
    assert "'=HYPERLINK(evil)" in [row[6] for row in rows[1:]]
