"""Every REST endpoint under /api/v1/, gathered from the apps' api/urls.py."""

from django.urls import include, path

from apps.core.api import views as core_api_views

urlpatterns = [
    path("", include("apps.workspaces.api.urls")),
    path("", include("apps.connectors.api.urls")),
    path("", include("apps.conversations.api.urls")),
    path("", include("apps.contacts.api.urls")),
]

# Anything else under /api/v1/ answers with the API's JSON 404, not an HTML page.
urlpatterns += [path("<path:unknown>", core_api_views.not_found)]
