from rest_framework import serializers

from apps.core.api.serializers import StrictModelSerializer, WorkspaceRelatedField
from apps.workspaces.models import AgentStatus, Membership, Shift, Team, Workspace


class WorkspaceSerializer(StrictModelSerializer):
    class Meta:
        model = Workspace
        fields = (
            "id",
            "name",
            "slug",
            "timezone",
            "default_language",
            "business_hours",
            "created_at",
        )
        read_only_fields = ("id", "slug", "created_at")


class TeamSerializer(StrictModelSerializer):
    members = WorkspaceRelatedField(queryset=Membership.objects.all(), many=True, required=False)

    class Meta:
        model = Team
        fields = ("id", "name", "members", "languages", "categories")


class ShiftSerializer(StrictModelSerializer):
    team = WorkspaceRelatedField(queryset=Team.objects.all())

    class Meta:
        model = Shift
        fields = ("id", "team", "weekday", "starts_at", "ends_at")


class AgentSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    name = serializers.CharField(source="user.display_name", read_only=True)
    status = serializers.CharField(source="agent_status.status", read_only=True, default="offline")
    capacity = serializers.IntegerField(source="agent_status.capacity", read_only=True, default=0)
    last_seen_at = serializers.DateTimeField(source="agent_status.last_seen_at", read_only=True, default=None)
    teams = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    open_conversations = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Membership
        fields = (
            *("id", "username", "name", "role", "status", "capacity", "last_seen_at", "teams"),
            "open_conversations",
        )


class AgentStatusSerializer(StrictModelSerializer):
    status = serializers.ChoiceField(choices=AgentStatus.Status.choices, required=False)
    capacity = serializers.IntegerField(min_value=0, max_value=200, required=False)

    class Meta:
        model = AgentStatus
        fields = ("status", "capacity")
