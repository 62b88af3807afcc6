from django.urls import path

from apps.analytics import views

app_name = "analytics"
urlpatterns = [
    path("analytics/", views.dashboard, name="dashboard"),
    path("analytics/conversations/", views.conversations, name="conversations"),
    path("analytics/live/", views.live, name="live"),
]
