from rest_framework.decorators import action

from apps.connectors.api.serializers import (
    ChannelSerializer,
    MessageTemplateSerializer,
    WebhookDeliverySerializer,
    WebhookSubscriptionSerializer,
)
from apps.connectors.models import Channel, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.connectors.services import webhook_subscriptions_changed
from apps.core.api.viewsets import WorkspaceModelViewSet, WorkspaceReadOnlyViewSet


class ChannelViewSet(WorkspaceReadOnlyViewSet):
    """The workspace's channels (credentials are never shown)."""

    queryset = Channel.objects.all()
    serializer_class = ChannelSerializer
    filterset_fields = ("kind", "enabled")


class MessageTemplateViewSet(WorkspaceReadOnlyViewSet):
    """Provider-approved templates per channel, with how many variables each needs."""

    queryset = MessageTemplate.objects.all()
    serializer_class = MessageTemplateSerializer
    filterset_fields = ("channel", "status", "language", "category")


class WebhookSubscriptionViewSet(WorkspaceModelViewSet):
    """Where Parley POSTs its events, signed with `X-Parley-Signature: t=<unix>,v1=<hex>` (HMAC-
    SHA256 of `<t>.<body>` with the subscription's secret, which the creating POST returns once)."""

    queryset = WebhookSubscription.objects.all()
    serializer_class = WebhookSubscriptionSerializer
    filterset_fields = ("enabled",)

    def perform_create(self, serializer):
        super().perform_create(serializer)
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def perform_update(self, serializer):
        super().perform_update(serializer)
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def perform_destroy(self, instance):
        super().perform_destroy(instance)
        webhook_subscriptions_changed(workspace_id=self.request.workspace.pk)

    def create(self, request, *args, **kwargs):
        response = super().create(request, *args, **kwargs)
        response.data["secret"] = WebhookSubscription.objects.get(pk=response.data["id"]).secret
        return response

    @action(detail=True, methods=["get"], serializer_class=WebhookDeliverySerializer)
    def deliveries(self, request, pk=None):
        """The subscription's delivery log, newest first, with each attempt's answer."""
        rows = WebhookDelivery.objects.filter(workspace=request.workspace, subscription=self.get_object())
        page = self.paginate_queryset(rows.order_by("-id"))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
