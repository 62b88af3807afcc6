"""The one base viewset every tenant resource inherits: it restricts the queryset to the
request's workspace, so a subclass is three lines (queryset, serializer_class, filterset_class)
and cannot forget the scope."""

from rest_framework import mixins, viewsets

from apps.workspaces.models import ADMIN_ROLES, INTEGRATION_ROLE


class WorkspaceViewSet(viewsets.GenericViewSet):
    write_roles = frozenset({*ADMIN_ROLES, INTEGRATION_ROLE})
    member_writes = False  # an action that any member may call sets this (and checks itself)
    workspace_field = "workspace"

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset.filter(**{self.workspace_field: self.request.workspace.pk})

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["workspace"] = getattr(self.request, "workspace", None)
        return context


class WorkspaceModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    WorkspaceViewSet,
):
    def perform_create(self, serializer):
        serializer.save(workspace=self.request.workspace)


class WorkspaceReadOnlyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    pass
