"""Segments in the REST API: `/api/v1/segments/` (list, read, create, update, delete),
`GET /api/v1/segments/{id}/count/` and `POST /api/v1/segments/count/ {"definition": {...}}` for
conditions not saved yet. Every member reads and counts; owners, supervisors and API tokens write.
A definition with a mistake is a 400 whose `fields.definition` names each one (docs/segments.md)."""

from django.db.models import ProtectedError
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.broadcasts.models import Segment
from apps.broadcasts.segments import FIELDS, segment_count, segment_errors
from apps.core.api.serializers import StrictModelSerializer, StrictSerializerMixin
from apps.core.api.viewsets import WorkspaceModelViewSet
from apps.core.exceptions import Conflict

CONDITION_SCHEMA = {
    "type": "object",
    "description": (
        'A condition {"field", "op", "value"} or a nested group {"match", "conditions"}. Fields: '
        f"{', '.join(FIELDS)}, custom.<key>."
    ),
    "properties": {
        "field": {"type": "string"},
        "op": {"type": "string"},
        "value": {},
        "match": {"type": "string", "enum": ["all", "any"]},
        "conditions": {"type": "array", "items": {"type": "object"}},
    },
}
DEFINITION_SCHEMA = {
    "type": "object",
    "description": "Conditions on contacts, ANDed (all) or ORed (any); groups nest up to 5 deep.",
    "properties": {
        "match": {"type": "string", "enum": ["all", "any"]},
        "conditions": {"type": "array", "items": CONDITION_SCHEMA, "minItems": 1, "maxItems": 100},
    },
    "required": ["match", "conditions"],
    "example": {
        "match": "all",
        "conditions": [
            {"field": "marketing_opt_in", "op": "is", "value": "whatsapp"},
            {"field": "last_purchase_at", "op": "older_than_days", "value": 30},
        ],
    },
}


@extend_schema_field(DEFINITION_SCHEMA)
class DefinitionField(serializers.JSONField):
    """Checked against the request's workspace: its tags, channels and custom fields."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        errors = segment_errors(data, workspace=self.context.get("workspace"))
        if errors:
            raise serializers.ValidationError(errors)
        return data


class SegmentSerializer(StrictModelSerializer):
    """A saved audience: its name (unique in the workspace) and its conditions."""

    definition = DefinitionField()

    class Meta:
        model = Segment
        fields = ("id", "name", "description", "definition", "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")


class SegmentCountRequestSerializer(StrictSerializerMixin, serializers.Serializer):
    """Conditions to count, not saved."""

    definition = DefinitionField()


class SegmentCountSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Contacts that match now (merged duplicates not counted).")


class SegmentViewSet(WorkspaceModelViewSet):
    """Saved audiences: conditions on contacts (docs/segments.md), usable by broadcasts, campaigns
    and workflows. A segment a broadcast or campaign uses cannot be deleted (409 `segment_in_use`)."""

    queryset = Segment.objects.all()
    serializer_class = SegmentSerializer
    filterset_fields = ("name",)

    @extend_schema(request=None, responses={200: SegmentCountSerializer})
    @action(detail=True, methods=["get"])
    def count(self, request, pk=None):
        """How many of the workspace's contacts match the segment now."""
        segment = self.get_object()
        return Response({"count": segment_count(workspace_id=request.workspace.pk, definition=segment.definition)})

    @extend_schema(request=SegmentCountRequestSerializer, responses={200: SegmentCountSerializer})
    @action(
        detail=False,
        methods=["post"],
        url_path="count",
        url_name="count-definition",
        member_writes=True,  # counting changes nothing: any member may
        serializer_class=SegmentCountRequestSerializer,
    )
    def count_definition(self, request):
        """How many contacts a definition not saved yet would match (what the admin's live count shows)."""
        serializer = SegmentCountRequestSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        definition = serializer.validated_data["definition"]
        return Response({"count": segment_count(workspace_id=request.workspace.pk, definition=definition)})

    def perform_destroy(self, instance):
        try:
            instance.delete()
        except ProtectedError:
            raise Conflict(
                "Broadcasts or campaigns use this segment; point them elsewhere first.", code="segment_in_use"
            ) from None
