from rest_framework.routers import SimpleRouter

from apps.workspaces.api import views

router = SimpleRouter()
router.register("workspaces", views.WorkspaceViewSetApi, basename="workspace")
router.register("teams", views.TeamViewSet, basename="team")
router.register("shifts", views.ShiftViewSet, basename="shift")
router.register("agents", views.AgentViewSet, basename="agent")

urlpatterns = router.urls
