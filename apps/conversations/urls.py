from django.urls import path

from apps.conversations import views

urlpatterns = [path("attachments/<uuid:attachment_uuid>/", views.attachment, name="attachment")]
