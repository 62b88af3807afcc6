"""The workflows' API: FAQ entries and the matcher the bot uses, workflows (read, enable, export,
import, start on a conversation), their runs (read, cancel), and the public callback through
which a seller or a delivery service answers an escalation."""

import json
import re

from django.db import transaction
from django.db.models import OuterRef, Prefetch, Subquery
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from apps.conversations.services import conversation_for_outbound
from apps.conversations.services.actions import check_may_act
from apps.core.api.errors import error_body
from apps.core.api.filters import IdFilter
from apps.core.api.viewsets import WorkspaceModelViewSet, WorkspaceReadOnlyViewSet, WorkspaceViewSet
from apps.core.exceptions import Conflict, DomainError, NotFound, PermissionDenied
from apps.workflows.api.serializers import (
    CallbackAnswerSerializer,
    FaqEntrySerializer,
    FaqMatchRequestSerializer,
    FaqMatchSerializer,
    RunDetailSerializer,
    RunSerializer,
    RunStartSerializer,
    WorkflowDetailSerializer,
    WorkflowEnableSerializer,
    WorkflowSerializer,
)
from apps.workflows.models import FaqEntry, Run, RunLog, Trigger, Workflow, WorkflowVersion
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record

MAX_CALLBACK_BYTES = 64 * 1024
MAX_DEFINITION_BYTES = 512 * 1024
CALLBACK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _actor(request):
    return request.user if getattr(request.user, "pk", None) else None


def _valid(view, serializer_class):
    serializer = serializer_class(data=view.request.data, context=view.get_serializer_context())
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _content_length(request) -> int:
    try:
        return int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return 0


def _too_large(detail: str) -> Response:
    return Response(error_body("too_large", detail), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


def _supervises(request) -> bool:
    """Owners, supervisors and API tokens: the roles that may change the workspace's set-up."""
    return request.workspace_role in WorkspaceViewSet.write_roles


class FaqEntryViewSet(WorkspaceModelViewSet):
    """What the bot answers free text with: one entry per intent and language. Supervisors and API
    tokens write; every member reads."""

    queryset = FaqEntry.objects.all()
    serializer_class = FaqEntrySerializer
    filterset_fields = ("intent", "language")

    @extend_schema(request=FaqMatchRequestSerializer, responses={200: FaqMatchSerializer})
    @action(detail=False, methods=["post"], member_writes=True, serializer_class=FaqMatchRequestSerializer)
    def match(self, request):
        """The entry the bot would answer `text` with, decided exactly as the bot decides (the
        workspace's confidence threshold applies): `faq` and `intent` are null below it."""
        from apps.workflows.matching import faq_match

        data = _valid(self, FaqMatchRequestSerializer)
        decision = faq_match(workspace_id=request.workspace.pk, text=data["text"], language=data["language"] or None)
        return Response({"faq": decision.faq_id, "intent": decision.intent, "confidence": decision.confidence})


def _with_definition(queryset):
    """Each workflow with its published version's definition, in the same query."""
    published = WorkflowVersion.objects.filter(workflow=OuterRef("pk"), number=OuterRef("version"))
    return queryset.annotate(definition=Subquery(published.values("definition")[:1]))


class WorkflowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    """The workspace's workflows (built in the admin). PATCH switches one on or off; export and
    import move a workflow between workspaces as JSON; `start` runs one on a conversation."""

    queryset = Workflow.objects.all()
    serializer_class = WorkflowSerializer
    filterset_fields = ("trigger", "enabled")

    def get_queryset(self):
        queryset = super().get_queryset()
        return _with_definition(queryset) if self.action == "retrieve" else queryset

    def get_serializer_class(self):
        return WorkflowDetailSerializer if self.action == "retrieve" else WorkflowSerializer

    @extend_schema(request=WorkflowEnableSerializer, responses={200: WorkflowSerializer})
    def partial_update(self, request, pk=None):
        """Only `enabled` changes here; everything else is edited in the admin."""
        from apps.workflows.definition import workflows_set_enabled

        workflow = self.get_object()
        enabled = _valid(self, WorkflowEnableSerializer)["enabled"]
        with transaction.atomic():
            if workflow.enabled != enabled:
                audit_record(
                    action=AuditEntry.Action.CHANGE, obj=workflow, details={"enabled": enabled}, request=request
                )
            workflows_set_enabled(workflows=[workflow], enabled=enabled)
        return Response(WorkflowSerializer(self.get_queryset().get(pk=workflow.pk)).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """The workflow as a JSON definition, the format `import` takes (docs/workflows.md)."""
        from apps.workflows.definition import workflow_export

        return Response(workflow_export(workflow=self.get_object()))

    @extend_schema(
        request=OpenApiTypes.OBJECT, responses={200: WorkflowDetailSerializer, 201: WorkflowDetailSerializer}
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request):
        """Creates a workflow from a JSON definition (as `export` gives it), or replaces the one
        of the same name (200); its team names must exist in this workspace. A problem in the
        definition is a 400 `invalid_workflow` naming every mistake."""
        from apps.workflows.definition import workflow_import

        if _content_length(request) > MAX_DEFINITION_BYTES:
            return _too_large("A definition has at most 512 KB.")
        definition = request.data
        if not isinstance(definition, dict):
            raise DomainError("The body must be a workflow definition (a JSON object).", code="invalid_workflow")
        replaces = self.get_queryset().filter(name=str(definition.get("name", ""))).exists()
        with transaction.atomic():
            workflow = workflow_import(workspace=request.workspace, definition=definition, user=_actor(request))
            details = {"imported": True, "version": workflow.version}
            action = AuditEntry.Action.CHANGE if replaces else AuditEntry.Action.CREATE
            audit_record(action=action, obj=workflow, details=details, request=request)
        found = _with_definition(self.get_queryset()).get(pk=workflow.pk)
        code = status.HTTP_200_OK if replaces else status.HTTP_201_CREATED
        return Response(WorkflowDetailSerializer(found).data, status=code)

    @extend_schema(request=RunStartSerializer, responses={201: RunSerializer})
    @action(detail=True, methods=["post"], member_writes=True, serializer_class=RunStartSerializer)
    def start(self, request, pk=None):
        """Runs the workflow on a conversation (or a contact's: the one on `channel`, else the one
        they used last). Agents may start the workflows offered as shortcuts, on conversations they
        may act on; supervisors and API tokens any enabled workflow. A conversation already
        following a workflow is a 409 `run_active` unless `replace` is true."""
        from apps.workflows.services import run_start

        workflow = self.get_object()
        data = _valid(self, RunStartSerializer)
        if not _supervises(request) and workflow.trigger != Trigger.SHORTCUT:
            raise PermissionDenied("Agents may start only the workflows offered as shortcuts.")
        if not workflow.enabled:
            raise Conflict("This workflow is switched off.", code="workflow_disabled")
        conversation = data.get("conversation") or conversation_for_outbound(
            contact=data["contact"], channel=data.get("channel")
        )
        check_may_act(membership=request.membership, conversation=conversation)
        # Not inside a transaction of ours: run_start makes the steps' calls out (HTTP, notify)
        # after its own commit.
        run = run_start(
            workflow=workflow,
            conversation=conversation,
            variables=data["variables"],
            actor=_actor(request),
            replace=data["replace"],
        )
        return Response(RunSerializer(_run(request, run.pk)).data, status=status.HTTP_201_CREATED)


def _run(request, pk: int) -> Run:
    return Run.objects.select_related("workflow", "version").get(workspace=request.workspace, pk=pk)


class RunFilter(filters.FilterSet):
    conversation = IdFilter()
    workflow = IdFilter()
    state = filters.MultipleChoiceFilter(choices=Run.State.choices, distinct=False)
    active = filters.BooleanFilter(method="filter_active", help_text="Only runs still running or waiting.")

    class Meta:
        model = Run
        fields = ("conversation", "workflow", "state", "active")

    def filter_active(self, queryset, name, value):
        return queryset.filter(state__in=Run.ACTIVE) if value else queryset.exclude(state__in=Run.ACTIVE)


class RunViewSet(WorkspaceReadOnlyViewSet):
    """Conversations' trips through workflows, newest first; one run's `log` has every step it
    took. `cancel` stops a run: supervisors any, agents on conversations they may act on."""

    queryset = Run.objects.select_related("workflow", "version")
    serializer_class = RunSerializer
    filterset_class = RunFilter

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(Prefetch("log", queryset=RunLog.objects.order_by("at", "id")))
        return queryset

    def get_serializer_class(self):
        return RunDetailSerializer if self.action == "retrieve" else RunSerializer

    @extend_schema(request=None, responses={200: RunSerializer})
    @action(detail=True, methods=["post"], member_writes=True)
    def cancel(self, request, pk=None):
        from apps.workflows.services import run_cancel

        run = self.get_object()
        check_may_act(membership=request.membership, conversation=run.conversation)
        run_cancel(run=run, actor=_actor(request))
        return Response(RunSerializer(_run(request, run.pk)).data)


class CallbackRateThrottle(SimpleRateThrottle):
    """Per address: the token is the credential, so a guesser gets few tries a minute (a token
    has 192 random bits; this keeps a misbehaving caller from hammering the database)."""

    scope = "workflow_callback"
    rate = "60/min"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class WorkflowCallbackView(APIView):
    """Public: the answer of whoever an escalation went to (a seller, a delivery service). The
    unguessable token in the URL, sent with the escalation, is the only credential; each token
    answers once (404 after that, and for a token nobody issued). The body is any JSON object up to
    64 KB, handed to the waiting run."""

    authentication_classes: list = []  # no session, so no CSRF: nothing here rides on cookies
    permission_classes = [AllowAny]
    throttle_classes = [CallbackRateThrottle]

    @extend_schema(
        operation_id="workflow_callbacks_create",
        request=OpenApiTypes.OBJECT,
        responses={200: CallbackAnswerSerializer},
        auth=[],
    )
    def post(self, request, token: str):
        from apps.workflows.services import run_callback

        if not CALLBACK_TOKEN.match(token):
            raise NotFound("No escalation waits for this answer.", code="not_found")
        if _content_length(request) > MAX_CALLBACK_BYTES:
            return _too_large("An answer has at most 64 KB.")
        if not isinstance(request.data, dict):
            raise DomainError("The body must be a JSON object.", code="invalid", fields={"body": ["Not an object."]})
        if len(json.dumps(request.data)) > MAX_CALLBACK_BYTES:  # a chunked body names no length
            return _too_large("An answer has at most 64 KB.")
        run_callback(token=token, data=request.data)
        return Response({"ok": True})
