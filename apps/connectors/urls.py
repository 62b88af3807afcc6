from django.urls import path

from apps.connectors import views

urlpatterns = [path("webhooks/<uuid:channel_uuid>/", views.webhook, name="webhook")]
