from apps.connectors.api.serializers import ChannelSerializer, MessageTemplateSerializer
from apps.connectors.models import Channel, MessageTemplate
from apps.core.api.viewsets import WorkspaceReadOnlyViewSet


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
