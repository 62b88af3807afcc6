from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.connectors.api.serializers import (
    ChannelSerializer,
    MessageTemplateCreateSerializer,
    MessageTemplateDraftSerializer,
    MessageTemplateSerializer,
    WebhookDeliverySerializer,
    WebhookSubscriptionCreatedSerializer,
    WebhookSubscriptionSerializer,
)
from apps.connectors.audit import changed_fields, subscription_audit_repr
from apps.connectors.models import Channel, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.connectors.services import template_draft_copy, webhook_subscriptions_changed
from apps.connectors.templates import (
    template_delete,
    template_draft_create,
    template_draft_update,
    template_submit,
)
from apps.core.api.serializers import StrictSerializerMixin
from apps.core.api.viewsets import WorkspaceModelViewSet, WorkspaceReadOnlyViewSet, WorkspaceViewSet
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record


class ChannelViewSet(WorkspaceReadOnlyViewSet):
    """The workspace's channels (credentials are never shown)."""

    queryset = Channel.objects.all()
    serializer_class = ChannelSerializer
    filterset_fields = ("kind", "enabled")


class EmptySerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class MessageTemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    """Message templates per channel, with how many variables each needs: the provider's
    (synced, and approved ones sendable) and drafts. Write a draft (`POST`, `PATCH`), submit it
    to Meta for review (`POST {id}/submit/`: pending, then approved or rejected by the status
    webhook), copy any template to a new draft (`POST {id}/copy/`), delete one (here and at Meta)."""

    queryset = MessageTemplate.objects.select_related("channel")
    serializer_class = MessageTemplateSerializer
    filterset_fields = ("channel", "status", "language", "category")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _valid(self, serializer_class, *, partial=False) -> dict:
        serializer = serializer_class(data=self.request.data, partial=partial, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _answer(self, template, code=status.HTTP_200_OK) -> Response:
        return Response(MessageTemplateSerializer(template).data, status=code)

    @extend_schema(request=MessageTemplateCreateSerializer, responses={201: MessageTemplateSerializer})
    def create(self, request):
        """A new draft of a WhatsApp channel."""
        data = dict(self._valid(MessageTemplateCreateSerializer))
        channel = data.pop("channel")
        return self._answer(template_draft_create(channel=channel, fields=data), status.HTTP_201_CREATED)

    @extend_schema(request=MessageTemplateDraftSerializer, responses={200: MessageTemplateSerializer})
    def partial_update(self, request, pk=None):
        """Changes a draft (only a draft: a submitted template is copied to a new one)."""
        data = self._valid(MessageTemplateDraftSerializer, partial=True)
        return self._answer(template_draft_update(template=self.get_object(), fields=data))

    @extend_schema(responses={204: None, 200: MessageTemplateSerializer})
    def destroy(self, request, pk=None):
        """Deleted at Meta too (this language only); refused while a broadcast that may still send
        or an enabled campaign uses it. One that finished broadcasts point at is kept, paused, for
        their history (200 with it)."""
        template = self.get_object()
        if template_delete(template=template):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self._answer(MessageTemplate.objects.get(pk=template.pk))

    @extend_schema(request=None, responses={200: MessageTemplateSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def submit(self, request, pk=None):
        """Sends a draft to Meta for review: it comes back pending, with Meta's id; the verdict
        (approved, or rejected with the reason) arrives by webhook. Meta's refusal is a 400 in
        its own words (`template_name_taken` names the `name` field)."""
        self._valid(EmptySerializer)
        return self._answer(template_submit(template=self.get_object()))

    @extend_schema(request=None, responses={201: MessageTemplateSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def copy(self, request, pk=None):
        """A new draft with this template's content, named `<name>_v2` (or the next free number)."""
        self._valid(EmptySerializer)
        return self._answer(template_draft_copy(template=self.get_object()), status.HTTP_201_CREATED)


class WebhookSubscriptionViewSet(WorkspaceModelViewSet):
    """Where Parley POSTs its events, signed with `X-Parley-Signature: t=<unix>,v1=<hex>` (HMAC-
    SHA256 of `<t>.<body>` with the subscription's secret, which the creating POST returns once)."""

    queryset = WebhookSubscription.objects.all()
    serializer_class = WebhookSubscriptionSerializer
    filterset_fields = ("enabled",)

    # Each write is audited: a subscription receives the workspace's events, customers' messages
    # among them. The entry names the fields changed and the address without its query, never
    # the secret.
    def perform_create(self, serializer):
        with transaction.atomic():
            super().perform_create(serializer)
            self._audit(AuditEntry.Action.CREATE, serializer.instance, {"events": serializer.instance.events})
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def perform_update(self, serializer):
        changed = changed_fields(serializer.instance, serializer.validated_data)
        with transaction.atomic():
            super().perform_update(serializer)
            if changed:
                self._audit(AuditEntry.Action.CHANGE, serializer.instance, {"changed": changed})
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def perform_destroy(self, instance):
        with transaction.atomic():
            self._audit(AuditEntry.Action.DELETE, instance, {})
            super().perform_destroy(instance)
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def _audit(self, action: str, subscription: WebhookSubscription, details: dict) -> None:
        audit_record(
            action=action,
            obj=subscription,
            object_repr=subscription_audit_repr(subscription),
            details=details,
            request=self.request,
        )

    @extend_schema(responses={201: WebhookSubscriptionCreatedSerializer})
    def create(self, request, *args, **kwargs):
        response = super().create(request, *args, **kwargs)
        response.data["secret"] = WebhookSubscription.objects.get(pk=response.data["id"]).secret
        return response

    # A page of deliveries, not of subscriptions: the subscriptions list's filters do not apply.
    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=WebhookDeliverySerializer, filter_backends=[])
    def deliveries(self, request, pk=None):
        """The subscription's delivery log, newest first, with each attempt's answer, a page at a
        time (`limit`, then `cursor` from `next`)."""
        rows = WebhookDelivery.objects.filter(workspace=request.workspace, subscription=self.get_object())
        page = self.paginate_queryset(rows.order_by("-id"))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
