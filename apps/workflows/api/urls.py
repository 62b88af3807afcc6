from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.workflows.api import views

router = SimpleRouter()
router.register("faq", views.FaqEntryViewSet, basename="faq")
router.register("workflows", views.WorkflowViewSet, basename="workflow")
router.register("workflow-runs", views.RunViewSet, basename="workflow-run")
urlpatterns = [
    *router.urls,
    path("workflow-callbacks/<str:token>/", views.WorkflowCallbackView.as_view(), name="workflow-callback"),
]
