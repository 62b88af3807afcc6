from django.urls import path

from apps.conversations import views

urlpatterns = [
    path("inbox/", views.inbox, name="inbox"),
    path("attachments/<uuid:attachment_uuid>/", views.attachment, name="attachment"),
]
