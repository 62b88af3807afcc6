"""Small builders for test data. Each takes keyword overrides and fills in the rest."""

import itertools

from apps.workspaces import services
from apps.workspaces.models import Role, Shift, Team, User, Workspace

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery"


def make_user(**fields) -> User:
    n = next(_seq)
    fields.setdefault("username", f"user{n}")
    fields.setdefault("email", f"user{n}@example.com")
    user = User(**fields)
    user.set_password(PASSWORD)
    user.save()
    return user


def make_workspace(**fields) -> Workspace:
    n = next(_seq)
    return services.workspace_create(
        name=fields.get("name", f"Workspace {n}"),
        slug=fields.get("slug", f"ws-{n}"),
        timezone_name=fields.get("timezone", "UTC"),
    )


def make_member(workspace: Workspace, role: str = Role.AGENT, user: User | None = None):
    return services.membership_add(workspace=workspace, user=user or make_user(), role=role)


def make_team(workspace: Workspace, *, members=(), **fields) -> Team:
    fields.setdefault("name", f"Team {next(_seq)}")
    team = Team.objects.create(workspace=workspace, **fields)
    services.team_set_members(team=team, memberships=list(members))
    return team


def make_shift(team: Team, **fields) -> Shift:
    from datetime import time

    fields.setdefault("weekday", 0)
    fields.setdefault("starts_at", time(9))
    fields.setdefault("ends_at", time(17))
    return Shift.objects.create(workspace=team.workspace, team=team, **fields)
