import pytest
from rest_framework.reverse import reverse

from apps.core.api.throttling import PrincipalRateThrottle
from apps.workspaces.models import AgentStatus, ApiToken, Team
from tests.conftest import client_for, token_client


def detail_urls(t):
    """Every object endpoint of workspace A that exists after the foundation."""
    return [
        f"/api/v1/workspaces/{t.a.slug}/",
        f"/api/v1/teams/{t.team_a.id}/",
        f"/api/v1/shifts/{t.shift_a.id}/",
        f"/api/v1/agents/{t.teammate.memberships.get().id}/",
    ]


def list_urls():
    return ["/api/v1/workspaces/", "/api/v1/teams/", "/api/v1/shifts/", "/api/v1/agents/"]


def test_api_token_reads_its_own_workspace(tenants):
    response = token_client(tenants.token_a).get("/api/v1/teams/")

    assert response.status_code == 200
    assert [team["name"] for team in response.json()["results"]] == ["Orders"]


def test_api_token_records_when_it_was_last_used(tenants):
    token_client(tenants.token_a).get("/api/v1/teams/")

    assert ApiToken.objects.get(token_hash=ApiToken.hash(tenants.token_a)).last_used_at is not None


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer", "Bearer a b"])
def test_bad_bearer_token_is_401_with_json_error(tenants, header):
    from django.test import Client

    response = Client(headers={"Authorization": header}).get("/api/v1/teams/")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_api_call_is_401(tenants):
    from django.test import Client

    response = Client().get("/api/v1/teams/")

    assert response.status_code == 401
    assert response.json() == {
        "code": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
    }


def test_outsider_token_gets_404_for_every_object_of_another_workspace(tenants):
    client = token_client(tenants.token_b)

    for url in detail_urls(tenants):
        for method in ("get", "patch", "put", "delete"):
            response = getattr(client, method)(url, data={}, content_type="application/json")
            # 405 only where the method exists for nobody (a workspace cannot be deleted).
            assert response.status_code in (404, 405), (method, url, response.content)
            assert response.json()["code"] in ("not_found", "method_not_allowed")


def test_outsider_session_gets_404_for_every_object_of_another_workspace(tenants):
    client = client_for(tenants.outsider)

    for url in detail_urls(tenants):
        assert client.get(url).status_code == 404, url


def test_outsider_cannot_choose_another_workspace_by_header(tenants):
    client = client_for(tenants.outsider)

    for url in list_urls():
        response = client.get(url, headers={"X-Parley-Workspace": tenants.a.slug})
        assert response.status_code == 404, url


def test_lists_never_include_another_workspaces_rows(tenants):
    for url in list_urls():
        body = token_client(tenants.token_b).get(url).json()
        ids = {row["id"] for row in body["results"]}
        assert tenants.team_a.id not in ids or url != "/api/v1/teams/"
        assert tenants.a.id not in ids or url != "/api/v1/workspaces/"
    agents = token_client(tenants.token_b).get("/api/v1/agents/").json()["results"]
    assert {a["username"] for a in agents} == {tenants.outsider.username}


def test_outsider_cannot_attach_another_workspaces_members_to_a_team(tenants):
    stranger = tenants.teammate.memberships.get()

    response = token_client(tenants.token_b).post(
        "/api/v1/teams/",
        {"name": "Raid", "members": [stranger.id]},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "members" in response.json()["fields"]
    assert not Team.objects.filter(name="Raid").exists()


def test_teammate_reads_teams_but_cannot_create_them(tenants):
    client = client_for(tenants.teammate)

    assert client.get("/api/v1/teams/").status_code == 200
    response = client.post("/api/v1/teams/", {"name": "Mine"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_supervisor_creates_a_team_in_their_workspace(tenants):
    member = tenants.teammate.memberships.get()

    response = client_for(tenants.supervisor).post(
        "/api/v1/teams/",
        {"name": "Complaints", "members": [member.id], "languages": ["en", "ru"]},
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    team = Team.objects.get(name="Complaints")
    assert team.workspace == tenants.a
    assert list(team.members.all()) == [member]


def test_validation_error_names_the_field(tenants):
    response = token_client(tenants.token_a).post(
        "/api/v1/shifts/",
        {"team": tenants.team_a.id, "weekday": 9},
        content_type="application/json",
    )

    body = response.json()
    assert response.status_code == 400
    assert body["code"] == "invalid"
    assert set(body["fields"]) == {"weekday", "starts_at", "ends_at"}
    assert body["detail"].split(":")[0] in body["fields"]


def test_unknown_field_is_rejected(tenants):
    response = token_client(tenants.token_a).post(
        "/api/v1/teams/", {"name": "X", "colour": "red"}, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {"colour": ["Unknown field."]}


def test_malformed_json_is_a_400_not_a_500(tenants):
    response = token_client(tenants.token_a).post("/api/v1/teams/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_duplicate_team_name_is_a_400(tenants):
    response = token_client(tenants.token_a).post(
        "/api/v1/teams/", {"name": "Orders"}, content_type="application/json"
    )

    assert response.status_code == 400


def test_agent_sets_own_status(tenants):
    member = tenants.teammate.memberships.get()

    response = client_for(tenants.teammate).post(
        f"/api/v1/agents/{member.id}/status/", {"status": "online"}, content_type="application/json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "online"
    assert AgentStatus.objects.get(membership=member).status == "online"


def test_agent_cannot_set_a_colleagues_status(tenants):
    supervisor = tenants.supervisor.memberships.get()

    response = client_for(tenants.teammate).post(
        f"/api/v1/agents/{supervisor.id}/status/",
        {"status": "away"},
        content_type="application/json",
    )

    assert response.status_code == 403


def test_supervisor_sets_an_agents_capacity(tenants):
    member = tenants.teammate.memberships.get()

    response = client_for(tenants.supervisor).post(
        f"/api/v1/agents/{member.id}/status/", {"capacity": 3}, content_type="application/json"
    )

    assert response.status_code == 200
    assert AgentStatus.objects.get(membership=member).capacity == 3


def test_outsider_cannot_set_status_of_another_workspaces_agent(tenants):
    member = tenants.teammate.memberships.get()

    response = client_for(tenants.outsider).post(
        f"/api/v1/agents/{member.id}/status/",
        {"status": "offline"},
        content_type="application/json",
    )

    assert response.status_code == 404


def test_unknown_api_path_is_a_json_404(tenants):
    response = token_client(tenants.token_a).get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_api_calls_past_the_token_rate_are_429_with_retry_after(tenants, monkeypatch):
    monkeypatch.setattr(PrincipalRateThrottle, "THROTTLE_RATES", {"principal": "3/min"})
    client = token_client(tenants.token_a)

    statuses = [client.get("/api/v1/teams/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/teams/")
    assert response.json()["code"] == "throttled"
    assert int(response.headers["Retry-After"]) > 0
    # Another workspace's token has its own budget.
    assert token_client(tenants.token_b).get("/api/v1/teams/").status_code == 200


def test_list_queries_stay_constant_with_more_rows(tenants, django_assert_max_num_queries):
    from tests.factories import make_member, make_team

    for n in range(20):
        make_team(tenants.a, name=f"Team {n}", members=[make_member(tenants.a)])
    client = token_client(tenants.token_a)

    with django_assert_max_num_queries(4):
        assert client.get("/api/v1/teams/?limit=50").status_code == 200
    with django_assert_max_num_queries(4):
        assert client.get("/api/v1/agents/?limit=50").status_code == 200


def test_router_names_resolve():
    assert reverse("team-list") == "/api/v1/teams/"
