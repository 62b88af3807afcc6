"""The admin is scoped per workspace: a supervisor or owner sees and edits only the workspaces
they administer, and anything else answers 404 as if it did not exist."""

import json

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from apps.workspaces.models import ApiToken, Membership, Role, Team
from tests.conftest import client_for, token_client
from tests.factories import PASSWORD, make_member, make_user

pytestmark = pytest.mark.django_db

CHANGELISTS = ["team", "membership", "apitoken", "workspace"]


def _rows_of(workspace) -> dict[str, set[int]]:
    return {
        "team": set(Team.objects.filter(workspace=workspace).values_list("pk", flat=True)),
        "membership": set(Membership.objects.filter(workspace=workspace).values_list("pk", flat=True)),
        "apitoken": set(ApiToken.objects.filter(workspace=workspace).values_list("pk", flat=True)),
        "workspace": {workspace.pk},
    }


def _changelist_ids(client, model: str) -> set[int]:
    response = client.get(f"/admin/workspaces/{model}/")
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].queryset}


def _other_workspace_objects(tenants) -> dict[str, int]:
    return {
        "team": tenants.team_b.pk,
        "membership": Membership.objects.get(user=tenants.outsider).pk,
        "apitoken": ApiToken.objects.get(workspace=tenants.b).pk,
        "workspace": tenants.b.pk,
    }


def _management_form(prefix: str) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": "0",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def _team_form(**fields) -> dict:
    return {
        "name": "Night desk",
        "languages": "",
        "categories": "",
        **_management_form("shifts"),
        **_management_form("shift_exceptions"),
        **fields,
    }


# Changelists ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHANGELISTS)
def test_supervisor_sees_only_own_workspace_rows_in_changelist(tenants, model):
    client = client_for(tenants.supervisor)

    assert _changelist_ids(client, model) == _rows_of(tenants.a)[model]


def test_supervisor_changelists_do_not_name_other_workspace_rows(tenants):
    client = client_for(tenants.supervisor)

    teams = client.get("/admin/workspaces/team/").content.decode()
    memberships = client.get("/admin/workspaces/membership/").content.decode()
    workspaces = client.get("/admin/workspaces/workspace/").content.decode()

    assert "Orders" in teams and "Couriers" not in teams
    assert tenants.teammate.username in memberships
    assert tenants.outsider.username not in memberships
    assert "Alpha" in workspaces and "Beta" not in workspaces


@pytest.mark.parametrize("model", ["team", "membership", "apitoken"])
def test_supervisor_changelist_filter_does_not_name_other_workspaces(tenants, model):
    response = client_for(tenants.supervisor).get(f"/admin/workspaces/{model}/")

    assert "Beta" not in response.content.decode()


def test_superuser_sees_rows_of_every_workspace(tenants):
    client = client_for(make_user(is_superuser=True, is_staff=True))

    for model in CHANGELISTS:
        expected = _rows_of(tenants.a)[model] | _rows_of(tenants.b)[model]
        assert _changelist_ids(client, model) == expected


def test_outsider_owner_enters_admin_but_sees_only_their_workspace(tenants):
    client = client_for(tenants.outsider)

    assert client.get("/admin/").status_code == 200
    for model in CHANGELISTS:
        assert _changelist_ids(client, model) == _rows_of(tenants.b)[model]


# Object pages of another workspace ------------------------------------------------------------


@pytest.mark.parametrize("model", CHANGELISTS)
@pytest.mark.parametrize("page", ["change", "delete", "history"])
def test_supervisor_cannot_open_other_workspace_object_pages_in_admin(tenants, model, page):
    object_id = _other_workspace_objects(tenants)[model]

    response = client_for(tenants.supervisor).get(f"/admin/workspaces/{model}/{object_id}/{page}/")

    assert response.status_code == 404


@pytest.mark.parametrize("model", ["team", "membership", "apitoken"])
def test_supervisor_can_open_own_workspace_object_pages_in_admin(tenants, model):
    object_id = _rows_of(tenants.a)[model].pop()
    client = client_for(tenants.supervisor)

    for page in ("change", "delete", "history"):
        assert client.get(f"/admin/workspaces/{model}/{object_id}/{page}/").status_code == 200


def test_supervisor_cannot_change_other_workspace_team_by_posting_to_it(tenants):
    response = client_for(tenants.supervisor).post(
        f"/admin/workspaces/team/{tenants.team_b.pk}/change/",
        _team_form(workspace=tenants.a.pk, name="Hijacked"),
    )

    assert response.status_code == 404
    tenants.team_b.refresh_from_db()
    assert (tenants.team_b.name, tenants.team_b.workspace_id) == ("Couriers", tenants.b.pk)


def test_supervisor_bulk_delete_removes_own_teams_and_skips_other_workspace_teams(tenants):
    client_for(tenants.supervisor).post(
        "/admin/workspaces/team/",
        {
            "action": "delete_selected",
            "_selected_action": [tenants.team_a.pk, tenants.team_b.pk],
            "post": "yes",
        },
    )

    assert not Team.objects.filter(pk=tenants.team_a.pk).exists()
    assert Team.objects.filter(pk=tenants.team_b.pk).exists()


# Who may enter --------------------------------------------------------------------------------


def test_agent_is_redirected_to_admin_login(tenants):
    response = client_for(tenants.teammate).get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_agent_only_member_of_other_workspace_is_redirected_to_admin_login(tenants):
    agent_of_b = make_member(tenants.b, Role.AGENT).user

    response = client_for(agent_of_b).get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_anonymous_visitor_is_redirected_to_admin_login(tenants):
    response = Client().get("/admin/workspaces/team/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_supervisor_can_sign_in_through_admin_login(tenants):
    response = Client().post(
        "/admin/login/?next=/admin/",
        {"username": tenants.supervisor.username, "password": PASSWORD, "next": "/admin/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_admin_index_for_supervisor_lists_workspace_models_but_not_superuser_ones(tenants):
    response = client_for(tenants.supervisor).get("/admin/")

    listed = {model["object_name"] for app in response.context["app_list"] for model in app["models"]}
    assert {"ApiToken", "Membership", "Team", "Workspace", "Channel", "Contact", "Conversation"} <= listed
    assert not listed & {"User", "Group", "PeriodicTask", "IntervalSchedule", "CrontabSchedule"}
    content = response.content.decode()
    for path in ("/admin/workspaces/user/", "/admin/auth/group/", "/admin/django_celery_beat/"):
        assert path not in content


def test_admin_index_for_superuser_lists_users_groups_and_schedules(tenants):
    response = client_for(make_user(is_superuser=True, is_staff=True)).get("/admin/")

    listed = {model["object_name"] for app in response.context["app_list"] for model in app["models"]}
    assert {"User", "Group", "PeriodicTask"} <= listed


@pytest.mark.parametrize(
    "path",
    ["/admin/workspaces/user/", "/admin/auth/group/", "/admin/django_celery_beat/periodictask/"],
)
def test_supervisor_is_refused_superuser_only_models(tenants, path):
    assert client_for(tenants.supervisor).get(path).status_code == 403


# Adding across workspaces ---------------------------------------------------------------------


def test_supervisor_cannot_add_team_to_other_workspace(tenants):
    response = client_for(tenants.supervisor).post("/admin/workspaces/team/add/", _team_form(workspace=tenants.b.pk))

    assert response.status_code == 200
    assert "workspace" in response.context["adminform"].form.errors
    assert not Team.objects.filter(name="Night desk").exists()


def test_supervisor_can_add_team_to_own_workspace(tenants):
    teammate = Membership.objects.get(user=tenants.teammate)

    response = client_for(tenants.supervisor).post(
        "/admin/workspaces/team/add/", _team_form(workspace=tenants.a.pk, members=[teammate.pk])
    )

    assert response.status_code == 302
    team = Team.objects.get(name="Night desk")
    assert team.workspace == tenants.a
    assert list(team.members.all()) == [teammate]


def test_supervisor_cannot_add_other_workspace_members_to_own_team(tenants):
    outsider = Membership.objects.get(user=tenants.outsider)

    response = client_for(tenants.supervisor).post(
        f"/admin/workspaces/team/{tenants.team_a.pk}/change/",
        _team_form(workspace=tenants.a.pk, name="Orders", members=[outsider.pk]),
    )

    assert response.status_code == 200
    assert "members" in response.context["adminform"].form.errors
    assert not tenants.team_a.members.filter(pk=outsider.pk).exists()


def test_supervisor_team_form_offers_only_own_workspace_and_members(tenants):
    response = client_for(tenants.supervisor).get("/admin/workspaces/team/add/")

    form = response.context["adminform"].form
    assert list(form.fields["workspace"].queryset) == [tenants.a]
    assert set(form.fields["members"].queryset) == set(Membership.objects.filter(workspace=tenants.a))


def test_supervisor_cannot_add_membership_to_other_workspace(tenants):
    newcomer = make_user()

    response = client_for(tenants.supervisor).post(
        "/admin/workspaces/membership/add/",
        {
            "workspace": tenants.b.pk,
            "user": newcomer.pk,
            "role": Role.AGENT,
            **_management_form("agent_status"),
        },
    )

    assert response.status_code == 200
    assert "workspace" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(user=newcomer).exists()


def test_supervisor_cannot_make_themselves_owner_through_membership_admin(tenants):
    membership = Membership.objects.get(user=tenants.supervisor)

    client_for(tenants.supervisor).post(
        f"/admin/workspaces/membership/{membership.pk}/change/",
        {
            "workspace": tenants.a.pk,
            "user": tenants.supervisor.pk,
            "role": Role.OWNER,
            **_management_form("agent_status"),
        },
    )

    membership.refresh_from_db()
    assert membership.role == Role.SUPERVISOR


def _promote_in_workspace_page(client, tenants, promoted: Membership):
    """Posts A's workspace change page unchanged except for `promoted`, who becomes owner."""
    rows = list(Membership.objects.filter(workspace=tenants.a).order_by("user__username"))
    data = {
        "name": tenants.a.name,
        "slug": tenants.a.slug,
        "timezone": tenants.a.timezone,
        "default_language": tenants.a.default_language,
        "business_hours": json.dumps(tenants.a.business_hours),
        "reply_warning_minutes": tenants.a.reply_warning_minutes,
        "reply_breach_minutes": tenants.a.reply_breach_minutes,
        "closing_categories": ",".join(tenants.a.closing_categories),
        **_management_form("memberships"),
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(len(rows)),
    }
    for i, row in enumerate(rows):
        data |= {
            f"memberships-{i}-id": row.pk,
            f"memberships-{i}-workspace": tenants.a.pk,
            f"memberships-{i}-user": row.user_id,
            f"memberships-{i}-role": Role.OWNER if row == promoted else row.role,
        }
    response = client.post(f"/admin/workspaces/workspace/{tenants.a.pk}/change/", data, follow=True)
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_supervisor_cannot_make_someone_owner_through_workspace_members(tenants):
    teammate = Membership.objects.get(user=tenants.teammate)

    messages = _promote_in_workspace_page(client_for(tenants.supervisor), tenants, teammate)

    assert "Only an owner can make someone an owner or change an owner's role." in messages
    teammate.refresh_from_db()
    assert teammate.role == Role.AGENT


def test_owner_makes_someone_owner_through_workspace_members(tenants):
    teammate = Membership.objects.get(user=tenants.teammate)

    messages = _promote_in_workspace_page(client_for(tenants.owner), tenants, teammate)

    assert "Only an owner can make someone an owner or change an owner's role." not in messages
    teammate.refresh_from_db()
    assert teammate.role == Role.OWNER


def test_supervisor_cannot_delete_own_workspace(tenants):
    response = client_for(tenants.supervisor).get(f"/admin/workspaces/workspace/{tenants.a.pk}/delete/")

    assert response.status_code == 403


def test_supervisor_cannot_add_a_workspace(tenants):
    assert client_for(tenants.supervisor).get("/admin/workspaces/workspace/add/").status_code == 403


# API tokens -----------------------------------------------------------------------------------


def _create_token_in_admin(client, workspace, name="warehouse") -> tuple[ApiToken, str]:
    response = client.post("/admin/workspaces/apitoken/add/", {"workspace": workspace.pk, "name": name}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "API token created" in str(m)]
    assert len(shown) == 1
    raw = shown[0].rsplit(": ", 1)[1]
    return ApiToken.objects.get(workspace=workspace, name=name), raw


def test_admin_created_token_is_shown_once_and_stored_only_as_its_hash(tenants):
    client = client_for(tenants.supervisor)

    token, raw = _create_token_in_admin(client, tenants.a)

    assert raw.startswith(ApiToken.PREFIX)
    assert token.token_hash == ApiToken.hash(raw)
    assert token.hint == raw[:10]
    assert token.created_by == tenants.supervisor
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(raw not in str(value) for value in stored.values())
    assert raw not in client.get(f"/admin/workspaces/apitoken/{token.pk}/change/").content.decode()
    assert raw not in client.get("/admin/workspaces/apitoken/").content.decode()


def test_admin_created_token_authenticates_on_the_api(tenants):
    _, raw = _create_token_in_admin(client_for(tenants.supervisor), tenants.a)

    response = token_client(raw).get("/api/v1/teams/")

    assert response.status_code == 200
    assert [team["name"] for team in response.json()["results"]] == ["Orders"]


def test_supervisor_cannot_create_token_for_other_workspace(tenants):
    response = client_for(tenants.supervisor).post(
        "/admin/workspaces/apitoken/add/", {"workspace": tenants.b.pk, "name": "sneaky"}
    )

    assert response.status_code == 200
    assert "workspace" in response.context["adminform"].form.errors
    assert not ApiToken.objects.filter(name="sneaky").exists()


def test_revoke_action_sets_revoked_at_and_token_gets_401(tenants):
    client = client_for(tenants.supervisor)
    token, raw = _create_token_in_admin(client, tenants.a)
    assert token_client(raw).get("/api/v1/teams/").status_code == 200

    client.post("/admin/workspaces/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})

    token.refresh_from_db()
    assert token.revoked_at is not None
    response = token_client(raw).get("/api/v1/teams/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "authentication_failed"


def test_revoke_action_leaves_other_workspace_tokens_alone(tenants):
    other = ApiToken.objects.get(workspace=tenants.b)

    client_for(tenants.supervisor).post(
        "/admin/workspaces/apitoken/", {"action": "revoke", "_selected_action": [other.pk]}
    )

    other.refresh_from_db()
    assert other.revoked_at is None
    assert token_client(tenants.token_b).get("/api/v1/teams/").status_code == 200
