"""The workflow admin's own pages (served through WorkflowAdmin.get_urls, so they are behind the
admin's login and scoped like it): import and export as JSON, a published version's JSON, and the
"try it" page where a supervisor plays the customer.

Try it uses a real conversation on the workspace's sandbox channel (a connector that sends
nothing anywhere: apps/connectors/providers/sandbox.py) with a contact "<first name> (try-it)", one
per supervisor. What the supervisor types goes through the ordinary inbound pipeline and the
engine is then advanced at once, so the page shows the bot's answer without waiting for a worker;
everything the workflow does (routing, notes, closing) happens for real in that workspace."""

import json
import uuid

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from apps.core.exceptions import DomainError
from apps.workflows.definition import definitions_parse, workflow_export, workflow_publish, workflows_import
from apps.workflows.models import Run, RunLog, Workflow, WorkflowVersion
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record

MAX_IMPORT_BYTES = 2 * 1024 * 1024
SANDBOX_NAME = "Try-it sandbox"
SHOWN_MESSAGES = 200
SHOWN_LOG = 15


def _workflow(request, model_admin, object_id) -> Workflow:
    """The workflow if this person may see it; anyone else's is a 404, as everywhere in the admin."""
    workflow = model_admin.get_object(request, str(object_id))
    if workflow is None:
        raise Http404
    return workflow


def _json_download(data: dict, filename: str, *, attachment: bool = True) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json; charset=utf-8"
    )
    if attachment:
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# Import and export ---------------------------------------------------------------------------


class ImportForm(forms.Form):
    workspace = forms.ModelChoiceField(queryset=None, label=_("Workspace"))
    file = forms.FileField(required=False, label=_("JSON file"))
    text = forms.CharField(
        required=False,
        label=_("or paste the JSON"),
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}),
    )

    def __init__(self, *args, workspaces, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].queryset = workspaces
        if workspaces.count() == 1:
            self.fields["workspace"].initial = workspaces.get().pk

    def clean(self):
        cleaned = super().clean()
        upload, text = cleaned.get("file"), (cleaned.get("text") or "").strip()
        if bool(upload) == bool(text):
            raise ValidationError(_("Upload a JSON file or paste its text (one of the two)."))
        if upload and upload.size > MAX_IMPORT_BYTES:
            raise ValidationError(_("The file is larger than 2 MB."))
        try:
            cleaned["data"] = json.loads(upload.read() if upload else text)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValidationError(_("This is not valid JSON: %(error)s") % {"error": error}) from None
        return cleaned


def workflow_import_page(request, model_admin):
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    workspaces = model_admin.administered(request)
    form = ImportForm(request.POST or None, request.FILES or None, workspaces=workspaces)
    if request.method == "POST" and form.is_valid():
        try:
            imported = _import_audited(request, form.cleaned_data["workspace"], form.cleaned_data["data"])
        except DomainError as error:
            for message in (error.fields or {}).get("definition") or [error.detail]:
                form.add_error(None, message)
        else:
            names = ", ".join(workflow.name for workflow in imported)
            messages.success(request, _("Imported and published: %(names)s.") % {"names": names})
            if len(imported) == 1:
                return redirect("admin:workflows_workflow_change", imported[0].pk)
            return redirect("admin:workflows_workflow_changelist")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "title": _("Import workflows from JSON"),
        "form": form,
    }
    return TemplateResponse(request, "admin/workflows/workflow/import.html", context)


def _import_audited(request, workspace, data) -> list[Workflow]:
    """Imports and publishes the file's workflows; each one created or replaced is in the audit
    log, in the import's own transaction."""
    definitions = definitions_parse(data)
    names = [d["name"] for d in definitions if isinstance(d, dict) and isinstance(d.get("name"), str)]
    existing = set(Workflow.objects.filter(workspace=workspace, name__in=names).values_list("name", flat=True))
    with transaction.atomic():
        imported = workflows_import(workspace=workspace, definitions=definitions, user=request.user)
        for workflow in imported:
            audit_record(
                action=AuditEntry.Action.CHANGE if workflow.name in existing else AuditEntry.Action.CREATE,
                obj=workflow,
                details={"imported": True, "version": workflow.version},
                request=request,
            )
    return imported


@require_GET
def workflow_export_download(request, model_admin, object_id):
    workflow = _workflow(request, model_admin, object_id)
    return _json_download(workflow_export(workflow=workflow), f"{slugify(workflow.name) or 'workflow'}.json")


@require_GET
def workflow_version_download(request, model_admin, object_id, number):
    workflow = _workflow(request, model_admin, object_id)
    version = WorkflowVersion.objects.filter(workflow=workflow, number=number).first()
    if version is None:
        raise Http404
    return _json_download(version.definition, "", attachment=False)


# Try it: the writes ----------------------------------------------------------------------------
# (They are the page's own; they call the conversation and workflow services for everything else.)


def sandbox_channel(*, workspace, user=None):
    """The workspace's try-it channel, made on first use (by `user`, as the audit log says); one
    per workspace even when two supervisors open the page at once."""
    from apps.connectors.models import Channel, ChannelKind
    from apps.workspaces.models import Workspace

    with transaction.atomic():
        list(Workspace.objects.select_for_update().filter(pk=workspace.pk).values_list("pk"))
        channel = Channel.objects.filter(workspace=workspace, kind=ChannelKind.SANDBOX).order_by("pk").first()
        if channel is None:
            channel = Channel.objects.create(workspace=workspace, kind=ChannelKind.SANDBOX, name=SANDBOX_NAME)
            audit_record(action=AuditEntry.Action.CREATE, actor=user, obj=channel, details={"try_it": True})
    return channel


def _tester_name(user) -> str:
    """The supervisor plays the customer under their own first name, so greetings read right."""
    return f"{user.first_name or user.username} (try-it)"


def _tester_id(user) -> str:
    return f"tryit-{user.pk}"


def tryit_conversation(*, workspace, user):
    """This supervisor's test conversation in the workspace, as the customer "<first name> (try-it)"."""
    from apps.contacts.services import contact_resolve
    from apps.conversations.services import conversation_for_outbound

    channel = sandbox_channel(workspace=workspace, user=user)
    contact = contact_resolve(channel=channel, external_id=_tester_id(user), name=_tester_name(user))
    return conversation_for_outbound(contact=contact, channel=channel)


def tryit_restart(*, workflow: Workflow, user):
    """A clean start: the conversation back with nobody, open, and this workflow from its first step."""
    from apps.conversations.models import Conversation
    from apps.conversations.services import conversation_assign, conversation_reopen
    from apps.workflows.services import run_start

    conversation = tryit_conversation(workspace=workflow.workspace, user=user)
    if conversation.assignee_id or conversation.team_id:
        conversation = conversation_assign(
            conversation=conversation, actor=user, membership=None, assignee=None, team=None
        )
    if conversation.status != Conversation.Status.OPEN:
        conversation = conversation_reopen(conversation=conversation, actor=user, membership=None)
    if not workflow.version:  # never published: trying it publishes version 1
        with transaction.atomic():
            version = workflow_publish(workflow=workflow, user=user)
            details = {"published": version.number}
            audit_record(action=AuditEntry.Action.CHANGE, actor=user, obj=workflow, details=details)
    run_start(workflow=workflow, conversation=conversation, actor=user, replace=True, allow_disabled=True)
    return conversation


def _option_title(conversation, option_id: str) -> str:
    """The title of the option tapped, from the latest menu that offered it."""
    from apps.conversations.models import Message

    menus = Message.objects.filter(
        conversation=conversation, direction=Message.Direction.OUTBOUND, kind=Message.Kind.INTERACTIVE
    ).order_by("-id")[:20]
    for menu in menus:
        for option in (menu.payload or {}).get("options") or []:
            if isinstance(option, dict) and str(option.get("id")) == option_id:
                return str(option.get("title") or option_id)
    return option_id


def tryit_send(*, workflow: Workflow, user, text: str = "", option_id: str = "") -> None:
    """The supervisor, as the customer, writes or taps an option; the bot answers before this returns."""
    from apps.connectors.base import InboundMessage
    from apps.conversations.services import inbound_message_apply
    from apps.workflows.services import conversation_advance

    conversation = tryit_conversation(workspace=workflow.workspace, user=user)
    common = {
        "provider_id": f"tryit-{uuid.uuid4().hex}",
        "sender_id": _tester_id(user),
        "sender_name": _tester_name(user),
        "timestamp": timezone.now(),
    }
    if option_id:
        title = _option_title(conversation, option_id)
        payload = {"reply_id": option_id, "title": title, "type": "button"}
        inbound = InboundMessage(kind="interactive", text=title, payload=payload, **common)
    else:
        inbound = InboundMessage(kind="text", text=text, **common)
    was_closed = conversation.status == conversation.Status.CLOSED
    message = inbound_message_apply(channel=conversation.channel, inbound=inbound)
    # As the worker would: a message that reopens the conversation may start an "opened" workflow.
    conversation_advance(
        conversation_id=conversation.pk,
        opened_message_id=message.pk if was_closed else None,
        message_id=message.pk,
    )


# Try it: the reads ---------------------------------------------------------------------------


def _cursor(conversation, workflow: Workflow) -> int:
    """The last message before this workflow's latest run here: the page shows what came after."""
    from apps.conversations.models import Message

    run = Run.objects.filter(conversation=conversation, workflow=workflow).order_by("-started_at").first()
    if run is None:
        return 0
    earlier = Message.objects.filter(conversation=conversation, created_at__lt=run.started_at).order_by("-id")
    return earlier.values_list("pk", flat=True).first() or 0


def _message_json(message) -> dict:
    payload = message.payload or {}
    return {
        "id": message.pk,
        "direction": message.direction,
        "sender_kind": message.sender_kind,
        "kind": message.kind,
        "text": message.text,
        "options": [
            {"id": str(o.get("id")), "title": str(o.get("title", ""))}
            for o in payload.get("options") or []
            if isinstance(o, dict)
        ],
        "state": message.state,
        "at": message.created_at.isoformat(),
    }


def _run_json(run: Run | None) -> dict | None:
    if run is None:
        return None
    log = list(RunLog.objects.filter(run=run).order_by("-at", "-id")[:SHOWN_LOG])[::-1]
    return {
        "id": run.pk,
        "workflow": run.workflow.name,
        "version": run.version.number,
        "state": run.state,
        "step": run.step,
        "variables": run.variables,
        "waiting": run.waiting,
        "outcome": run.outcome,
        "steps_taken": run.steps_taken,
        "url": reverse("admin:workflows_run_change", args=[run.pk]),
        "log": [
            {"at": e.at.isoformat(), "step": e.step, "kind": e.kind, "outcome": e.outcome, "detail": e.detail}
            for e in log
        ],
    }


def tryit_state(*, conversation, after: int) -> dict:
    from apps.conversations.models import Message

    shown = Message.objects.filter(conversation=conversation, pk__gt=after).order_by("-id")[:SHOWN_MESSAGES]
    run = (
        Run.objects.filter(conversation=conversation)
        .select_related("workflow", "version")
        .order_by("-started_at", "-id")
        .first()
    )
    conversation.refresh_from_db()
    return {
        "conversation": {
            "id": conversation.pk,
            "status": conversation.status,
            "team": conversation.team.name if conversation.team_id else None,
            "assignee": conversation.assignee.user.username if conversation.assignee_id else None,
            "language": conversation.language,
            "url": reverse("admin:conversations_conversation_change", args=[conversation.pk]),
        },
        "messages": [_message_json(message) for message in reversed(list(shown))],
        "run": _run_json(run),
    }


# Try it: the page and its endpoints ----------------------------------------------------------


def _error(error: DomainError) -> JsonResponse:
    body = {"code": error.code, "detail": error.detail, **({"fields": error.fields} if error.fields else {})}
    return JsonResponse(body, status=error.status)


@require_GET
def try_page(request, model_admin, object_id):
    workflow = _workflow(request, model_admin, object_id)
    conversation = tryit_conversation(workspace=workflow.workspace, user=request.user)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "original": workflow,
        "title": _("Try “%(name)s”") % {"name": workflow.name},
        "conversation": conversation,
        "after": _cursor(conversation, workflow),
        "urls": {
            "state": reverse("admin:workflows_workflow_try_state", args=[workflow.pk]),
            "restart": reverse("admin:workflows_workflow_try_restart", args=[workflow.pk]),
            "send": reverse("admin:workflows_workflow_try_send", args=[workflow.pk]),
        },
    }
    return TemplateResponse(request, "admin/workflows/workflow/try.html", context)


@require_GET
def try_state(request, model_admin, object_id):
    workflow = _workflow(request, model_admin, object_id)
    conversation = tryit_conversation(workspace=workflow.workspace, user=request.user)
    try:
        after = int(request.GET.get("after", ""))
    except ValueError:
        after = _cursor(conversation, workflow)
    return JsonResponse(tryit_state(conversation=conversation, after=after))


@require_POST
def try_restart(request, model_admin, object_id):
    workflow = _workflow(request, model_admin, object_id)
    if not model_admin.has_change_permission(request, workflow):
        raise PermissionDenied
    try:
        conversation = tryit_restart(workflow=workflow, user=request.user)
    except DomainError as error:
        return _error(error)
    return JsonResponse({"after": _cursor(conversation, workflow)})


@require_POST
def try_send(request, model_admin, object_id):
    workflow = _workflow(request, model_admin, object_id)
    if not model_admin.has_change_permission(request, workflow):
        raise PermissionDenied
    text, option_id = request.POST.get("text", "").strip()[:4000], request.POST.get("option", "").strip()[:64]
    if not text and not option_id:
        return _error(DomainError("Write something first.", code="empty_message", fields={"text": ["Required."]}))
    try:
        tryit_send(workflow=workflow, user=request.user, text=text, option_id=option_id)
    except DomainError as error:
        return _error(error)
    return JsonResponse({"ok": True})
