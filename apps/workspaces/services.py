"""Writes for workspaces, teams, agents and API tokens."""

import secrets
from datetime import timedelta

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import models, transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from apps.core.events import build_event
from apps.core.exceptions import DomainError, PermissionDenied
from apps.core.realtime import publish_on_commit
from apps.workspaces.models import AgentStatus, ApiToken, AuditEntry, Membership, Role, Team, User, Workspace

API_TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


def workspace_create(
    *,
    name: str,
    slug: str,
    timezone_name: str = "UTC",
    owner: User | None = None,
    default_language: str = "en",
) -> Workspace:
    with transaction.atomic():
        workspace = Workspace.objects.create(
            name=name, slug=slug, timezone=timezone_name, default_language=default_language
        )
        if owner is not None:
            membership_add(workspace=workspace, user=owner, role=Role.OWNER)
    return workspace


def membership_add(*, workspace: Workspace, user: User, role: str = Role.AGENT) -> Membership:
    membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    AgentStatus.objects.get_or_create(membership=membership, defaults={"workspace": workspace})
    return membership


def _may_grant(*, actor: User, workspace: Workspace, role: str, current: str | None) -> bool:
    """Owners and superusers grant any role; supervisors may not touch ownership."""
    if actor.is_superuser:
        return True
    actor_role = Membership.objects.filter(user=actor, workspace=workspace).values_list("role", flat=True).first()
    if actor_role == Role.OWNER:
        return True
    return actor_role == Role.SUPERVISOR and Role.OWNER not in (role, current)


def membership_set_role(
    *, actor: User, workspace: Workspace, user: User, role: str, request: HttpRequest | None = None
) -> Membership:
    current = Membership.objects.filter(workspace=workspace, user=user).values_list("role", flat=True).first()
    if not _may_grant(actor=actor, workspace=workspace, role=role, current=current):
        raise PermissionDenied("Only an owner can make someone an owner or change an owner's role.")
    with transaction.atomic():
        membership = membership_add(workspace=workspace, user=user, role=role)
        if current != role:
            audit_record(
                action=AuditEntry.Action.CREATE if current is None else AuditEntry.Action.CHANGE,
                actor=actor,
                obj=membership,
                details={"user": user.username, "role": role, "previous_role": current},
                request=request,
            )
    return membership


def membership_remove(*, actor: User, membership: Membership, request: HttpRequest | None = None) -> None:
    if not _may_grant(actor=actor, workspace=membership.workspace, role=Role.AGENT, current=membership.role):
        raise PermissionDenied("Only an owner can remove an owner.")
    with transaction.atomic():
        audit_record(
            action=AuditEntry.Action.DELETE,
            actor=actor,
            obj=membership,
            details={"user": membership.user.username, "previous_role": membership.role},
            request=request,
        )
        membership.delete()


def team_set_members(*, team: Team, memberships: list[Membership]) -> None:
    strangers = [m for m in memberships if m.workspace_id != team.workspace_id]
    if strangers:
        raise DomainError("A team's members must belong to its workspace.", code="invalid_member")
    team.members.set(memberships)


def agent_status_set(
    *,
    membership: Membership,
    status: str | None = None,
    capacity: int | None = None,
    reason: str = "manual",
) -> AgentStatus:
    if status is not None and status not in AgentStatus.Status.values:
        raise DomainError(f"Unknown status {status!r}.", code="invalid_status", fields={"status": ["Unknown."]})
    now = timezone.now()
    with transaction.atomic():
        agent, _ = AgentStatus.objects.select_for_update().get_or_create(
            membership=membership, defaults={"workspace_id": membership.workspace_id}
        )
        was_online, previous_capacity = agent.status == AgentStatus.Status.ONLINE, agent.capacity
        fields = ["last_seen_at"]
        agent.last_seen_at = now
        if status is not None and status != agent.status:
            agent.status, agent.changed_at = status, now
            fields += ["status", "changed_at"]
            _presence_record(membership, status)
        if capacity is not None:
            agent.capacity = capacity
            fields.append("capacity")
        agent.save(update_fields=fields)
        _publish_agent_status(agent, membership, reason)
        if agent.status == AgentStatus.Status.ONLINE and (not was_online or agent.capacity > previous_capacity):
            _queues_dispatch_on_commit(membership)
    return agent


def _presence_record(membership: Membership, status: str) -> None:
    from apps.analytics.services import presence_record  # analytics builds on workspaces

    presence_record(membership=membership, status=status)


def _queues_dispatch_on_commit(membership: Membership) -> None:
    """The agent can take more: their teams' queues are served once this commits."""
    from apps.workflows import routing  # workflows builds on workspaces, not the other way round

    routing.queues_dispatch_on_commit(routing.teams_of(membership))


def _publish_agent_status(agent: AgentStatus, membership: Membership, reason: str) -> None:
    publish_on_commit(
        membership.workspace_id,
        build_event(
            "agent.status",
            user_id=membership.user_id,
            membership_id=membership.id,
            status=agent.status,
            capacity=agent.capacity,
            reason=reason,
        ),
    )


def agent_heartbeat(*, membership: Membership) -> None:
    """The browser is still there: keeps an online or away agent from being swept offline."""
    AgentStatus.objects.filter(membership=membership).update(last_seen_at=timezone.now())


def agent_mark_offline_if_stale(*, agent_status_id: int, older_than) -> bool:
    """Claims the row with a conditional UPDATE, so two sweeps never both announce it."""
    with transaction.atomic():
        claimed = (
            AgentStatus.objects.filter(pk=agent_status_id, last_seen_at__lt=older_than)
            .exclude(status=AgentStatus.Status.OFFLINE)
            .update(status=AgentStatus.Status.OFFLINE, changed_at=timezone.now())
        )
        if claimed != 1:
            return False
        agent = AgentStatus.objects.select_related("membership").get(pk=agent_status_id)
        _presence_record(agent.membership, AgentStatus.Status.OFFLINE)
        _publish_agent_status(agent, agent.membership, "no_heartbeat")
    return True


def user_set_language(*, user: User, language: str) -> None:
    user.language = language
    user.save(update_fields=["language"])


def api_token_create(
    *, workspace: Workspace, name: str, created_by: User | None = None, request: HttpRequest | None = None
) -> tuple[ApiToken, str]:
    """Returns the token and its secret; the secret is shown once and never stored."""
    raw = ApiToken.PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            workspace=workspace,
            name=name,
            token_hash=ApiToken.hash(raw),
            hint=raw[:10],
            created_by=created_by,
        )
        audit_record(action=AuditEntry.Action.CREATE, actor=created_by, obj=token, request=request)
    return token, raw


def api_token_revoke(*, token: ApiToken, actor: User | None = None, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if revoked:
            audit_record(action=AuditEntry.Action.REVOKE, actor=actor, obj=token, request=request)


def api_token_touch(*, token: ApiToken) -> None:
    """Records use at most once a minute, so a busy integration does not write on every call."""
    now = timezone.now()
    if token.last_used_at and now - token.last_used_at < API_TOKEN_TOUCH_INTERVAL:
        return
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now


# The audit log ----------------------------------------------------------------------------------


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    workspace_id: int | None = None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str | int = "",
    object_repr: str = "",
    details: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEntry:
    """Writes one audit log entry, in the caller's transaction (an act that rolls back leaves no
    entry). `obj` fills the workspace, type, id and description; a model may name itself with an
    `audit_repr` that carries no personal data (a contact is "Contact #42"). `details` must not
    hold personal data either: the log outlives a contact's erasure. `request` gives the actor
    (when not named: the signed-in person, or the API token an integration called with) and the
    IP address."""
    principal = getattr(request, "user", None)
    if actor is None and isinstance(principal, User) and principal.is_authenticated:
        actor = principal
    # An API call acts as its token, not as a person: the entry names the token.
    label = actor.get_username() if actor is not None else str(principal) if hasattr(principal, "token") else ""
    if obj is not None:
        workspace_id = workspace_id or getattr(obj, "workspace_id", None)
        if isinstance(obj, Workspace):
            workspace_id = obj.pk
        object_type = object_type or obj._meta.model_name
        object_id = object_id or obj.pk or ""
        object_repr = object_repr or getattr(obj, "audit_repr", None) or str(obj)
    return AuditEntry.objects.create(
        workspace_id=workspace_id,
        actor=actor,
        actor_label=label[:150],
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        object_repr=object_repr[:200],
        details=details or {},
        ip=_client_ip(request),
    )


def _client_ip(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client says unless a proxy we trust set
    # it, and behind one daphne's --proxy-headers already puts the client's address here.
    return (request.META.get("REMOTE_ADDR") or None) if request is not None else None


def _workspace_ids_of(user: User | None) -> list[int | None]:
    ids = list(Membership.objects.filter(user=user).values_list("workspace_id", flat=True)) if user else []
    return ids or [None]


# Django's auth signals are the hooks for sign-ins rather than our login views because every way
# in (the sign-in page, the admin's, a future SSO backend) goes through `authenticate()` and
# `login()`, which send them; a view-level hook would miss the ones we did not write. The
# receivers only call the service. Connected when this module is imported, which the admin's
# autodiscovery does at start-up in every process (apps/workspaces/admin.py imports it).
@receiver(user_logged_in, dispatch_uid="audit_sign_in")
def _audit_sign_in(sender, request, user, **kwargs) -> None:
    for workspace_id in _workspace_ids_of(user):  # each workspace's owners see their people's sign-ins
        audit_record(action=AuditEntry.Action.SIGN_IN, actor=user, workspace_id=workspace_id, request=request)


@receiver(user_login_failed, dispatch_uid="audit_sign_in_failed")
def _audit_sign_in_failed(sender, credentials, request=None, **kwargs) -> None:
    username = (credentials or {}).get("username") or ""
    user = User.objects.filter(username=username).first() if username else None
    for workspace_id in _workspace_ids_of(user):
        audit_record(
            action=AuditEntry.Action.SIGN_IN_FAILED,
            workspace_id=workspace_id,
            object_type="user",
            object_id=user.pk if user else "",
            object_repr=username[:150],
            request=request,
        )
