"""Every REST endpoint under /api/v1/, gathered from the apps' api/urls.py."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from apps.core.api import views as core_api_views

urlpatterns = [
    # The reference is public: it describes the API, it shows no workspace's data.
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny], throttle_classes=[]), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", permission_classes=[AllowAny], throttle_classes=[]),
        name="api-docs",
    ),
    path("", include("apps.workspaces.api.urls")),
    path("", include("apps.connectors.api.urls")),
    path("", include("apps.conversations.api.urls")),
    path("", include("apps.contacts.api.urls")),
    path("", include("apps.workflows.api.urls")),
    path("", include("apps.broadcasts.api.urls")),
    path("", include("apps.analytics.api.urls")),
]

# Anything else under /api/v1/ answers with the API's JSON 404, not an HTML page.
urlpatterns += [path("<path:unknown>", core_api_views.not_found)]
