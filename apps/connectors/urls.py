from django.urls import path

from apps.connectors import views

urlpatterns = [
    path("webhooks/<uuid:channel_uuid>/", views.webhook, name="webhook"),
    path("widget/<uuid:channel_uuid>.js", views.widget_script, name="widget-script"),
    path("widget/<uuid:channel_uuid>/uploads/", views.widget_upload, name="widget-upload"),
    path("widget/<uuid:channel_uuid>/files/<uuid:attachment_uuid>/", views.widget_file, name="widget-file"),
]
