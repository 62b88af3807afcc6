from apps.connectors.api.serializers import ChannelSerializer
from apps.connectors.models import Channel
from apps.core.api.viewsets import WorkspaceReadOnlyViewSet


class ChannelViewSet(WorkspaceReadOnlyViewSet):
    """The workspace's channels (credentials are never shown)."""

    queryset = Channel.objects.all()
    serializer_class = ChannelSerializer
    filterset_fields = ("kind", "enabled")
