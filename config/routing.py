from django.urls import path

from apps.connectors.consumers import WidgetConsumer
from apps.core.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("ws/", RealtimeConsumer.as_asgi()),
]

# Sockets opened from other sites (the web chat widget); each consumer authenticates itself.
public_websocket_urlpatterns = [
    path("ws/widget/<uuid:channel_uuid>/", WidgetConsumer.as_asgi()),
]
