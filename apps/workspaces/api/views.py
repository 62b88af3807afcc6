from django.db.models import Count, Q
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.core.api.filters import IdFilter
from apps.core.api.viewsets import WorkspaceModelViewSet, WorkspaceReadOnlyViewSet, WorkspaceViewSet
from apps.core.exceptions import PermissionDenied
from apps.workspaces import services
from apps.workspaces.api.serializers import (
    AgentSerializer,
    AgentStatusSerializer,
    ShiftSerializer,
    TeamSerializer,
    WorkspaceSerializer,
)
from apps.workspaces.models import Membership, Shift, Team, Workspace


class WorkspaceViewSetApi(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, WorkspaceViewSet):
    """The workspace the call acts in (choose it with the X-Parley-Workspace header)."""

    queryset = Workspace.objects.all()
    serializer_class = WorkspaceSerializer
    workspace_field = "pk"
    lookup_field = "slug"

    def perform_update(self, serializer):
        moved = serializer.validated_data.get("timezone", serializer.instance.timezone) != serializer.instance.timezone
        super().perform_update(serializer)
        if moved:
            from apps.broadcasts.campaigns import workspace_campaigns_reschedule

            workspace_campaigns_reschedule(workspace_id=serializer.instance.pk)  # campaigns keep their local time


class TeamViewSet(WorkspaceModelViewSet):
    queryset = Team.objects.prefetch_related("members")
    serializer_class = TeamSerializer
    filterset_fields = ("name",)


class ShiftViewSet(WorkspaceModelViewSet):
    queryset = Shift.objects.all()
    serializer_class = ShiftSerializer
    filterset_fields = ("team", "weekday")


class AgentFilter(filters.FilterSet):
    status = filters.CharFilter(field_name="agent_status__status")
    team = IdFilter(field_name="teams")

    class Meta:
        model = Membership
        fields = ("role", "status", "team")


class AgentViewSet(WorkspaceReadOnlyViewSet):
    # Load: open conversations assigned to each agent, for the supervisors' live board.
    queryset = (
        Membership.objects.select_related("user", "agent_status")
        .prefetch_related("teams")
        .annotate(
            open_conversations=Count(
                "assigned_conversations", filter=Q(assigned_conversations__status__in=("open", "pending"))
            )
        )
        .order_by("id")
    )
    serializer_class = AgentSerializer
    filterset_class = AgentFilter

    @extend_schema(request=AgentStatusSerializer, responses={200: AgentSerializer})
    @action(detail=True, methods=["post"], serializer_class=AgentStatusSerializer, member_writes=True)
    def status(self, request, pk=None):
        """Set an agent's presence and capacity: agents their own, supervisors anyone's. Answers
        the agent as the board shows them."""
        membership = self.get_object()
        if membership != request.membership and request.workspace_role not in self.write_roles:
            raise PermissionDenied("Agents may set only their own status.")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.agent_status_set(membership=membership, **serializer.validated_data)
        return Response(AgentSerializer(self.get_queryset().get(pk=membership.pk)).data)
