"""Broadcasts and campaigns in the REST API, so an order system can send and schedule one.

`/api/v1/broadcasts/`: list, read, create (JSON, or multipart with a `csv` file of phones),
`POST {id}/schedule/ {"at"}`, `{id}/start/`, `{id}/pause/`, `{id}/resume/`, `{id}/cancel/`, and
`GET {id}/stats/`. `/api/v1/campaigns/`: list, read, `POST {id}/run/`. Reads for every member;
writes for owners, supervisors and API tokens. A time without an offset is the workspace's
local time. Every rule (template approved, one value per variable, the audience…) is checked by
the sender's services, whose domain errors come back as JSON 4xx."""

import json
from datetime import UTC

from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from apps.broadcasts.models import Broadcast, Campaign, Segment
from apps.connectors.models import Channel, MessageTemplate
from apps.contacts.models import Tag
from apps.core.api.filters import IdFilter
from apps.core.api.parsers import StrictJSONParser
from apps.core.api.serializers import StrictSerializerMixin, WorkspaceRelatedField
from apps.core.api.viewsets import WorkspaceViewSet
from apps.core.exceptions import Conflict

MAX_CSV_BYTES = 10 * 1024 * 1024


class MomentField(serializers.DateTimeField):
    """A moment, handed to PostgreSQL in UTC (it stores offsets up to ±15:59 only); a time
    without an offset is read in the timezone active while validating (the workspace's)."""

    def to_internal_value(self, value):
        moment = super().to_internal_value(value)
        try:
            return moment.astimezone(UTC)
        except (OverflowError, ValueError):
            self.fail("invalid", format="an ISO 8601 date and time")


class VariablesField(serializers.JSONField):
    """One entry per template variable: {"field": "contact.first_name"}, {"value": "SPRING10"} or,
    for a CSV, {"column": "promo"}. In a multipart form it is the same list as JSON text."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise serializers.ValidationError("Give the variables as a JSON list.") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise serializers.ValidationError('A list of objects, e.g. [{"field": "contact.first_name"}].')
        return data


class TemplateSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageTemplate
        fields = ("id", "name", "language", "category", "body")
        read_only_fields = fields


class BroadcastSerializer(serializers.ModelSerializer):
    template = TemplateSummarySerializer(read_only=True)
    channel = serializers.PrimaryKeyRelatedField(read_only=True)
    segment = serializers.PrimaryKeyRelatedField(read_only=True)
    tag = serializers.PrimaryKeyRelatedField(read_only=True)
    campaign = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Broadcast
        fields = (
            *("id", "name", "state", "paused_reason", "channel", "template", "variables", "audience", "segment"),
            "tag",
            *("campaign", "scheduled_at", "created_at", "started_at", "finished_at", "total"),
        )
        read_only_fields = fields


class BroadcastCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    name = serializers.CharField(max_length=160)
    channel = WorkspaceRelatedField(queryset=Channel.objects.all())
    template = WorkspaceRelatedField(queryset=MessageTemplate.objects.all())
    variables = VariablesField(required=False, default=list)
    audience = serializers.ChoiceField(choices=Broadcast.Audience.choices)
    segment = WorkspaceRelatedField(queryset=Segment.objects.all(), required=False, allow_null=True)
    tag = WorkspaceRelatedField(queryset=Tag.objects.all(), required=False, allow_null=True)
    scheduled_at = MomentField(
        required=False, allow_null=True, help_text="Send at this moment; without an offset, the workspace's time."
    )
    csv = serializers.FileField(
        required=False, help_text="Multipart only: a CSV with a `phone` column and one column per variable."
    )

    def validate_csv(self, upload):
        if upload.size > MAX_CSV_BYTES:
            raise serializers.ValidationError("The CSV is larger than 10 MB.")
        return upload.read()  # the sender's service reads it (UTF-8, `,` or `;`) and names each bad row


class ScheduleSerializer(StrictSerializerMixin, serializers.Serializer):
    at = MomentField(help_text="When to send; without an offset, the workspace's time.")


class EmptySerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class BroadcastFilter(filters.FilterSet):
    campaign = IdFilter(field_name="campaign")
    channel = IdFilter(field_name="channel")

    class Meta:
        model = Broadcast
        fields = ("state", "audience", "campaign", "channel")


def _actor(request):
    return request.user if getattr(request.user, "pk", None) else None


class BroadcastViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    """The workspace's broadcasts, newest first; create one, schedule it, start, pause, resume or
    cancel it, and read its numbers."""

    queryset = Broadcast.objects.select_related("template").order_by("-created_at", "-id")
    serializer_class = BroadcastSerializer
    filterset_class = BroadcastFilter
    parser_classes = [StrictJSONParser, MultiPartParser]

    def get_serializer_class(self):
        return BroadcastCreateSerializer if self.action == "create" else super().get_serializer_class()

    def _valid(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        with timezone.override(self.request.workspace.tz):  # a naive time is the workspace's
            serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _answer(self, broadcast, code=status.HTTP_200_OK) -> Response:
        broadcast = self.get_queryset().get(pk=broadcast.pk)
        return Response(BroadcastSerializer(broadcast).data, status=code)

    @extend_schema(request=BroadcastCreateSerializer, responses={201: BroadcastSerializer})
    def create(self, request):
        from apps.broadcasts.services import broadcast_create

        data = self._valid(BroadcastCreateSerializer)
        broadcast = broadcast_create(
            workspace=request.workspace,
            name=data["name"],
            channel=data["channel"],
            template=data["template"],
            variables=data["variables"],
            audience=data["audience"],
            segment=data.get("segment"),
            tag=data.get("tag"),
            csv_content=data.get("csv"),
            scheduled_at=data.get("scheduled_at"),
            created_by=_actor(request),
        )
        return self._answer(broadcast, status.HTTP_201_CREATED)

    @extend_schema(request=ScheduleSerializer, responses={200: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=ScheduleSerializer)
    def schedule(self, request, pk=None):
        """Send at `at` (a draft, or a scheduled broadcast moved to another time)."""
        from apps.broadcasts.services import broadcast_schedule

        broadcast = self.get_object()
        broadcast_schedule(broadcast=broadcast, at=self._valid(ScheduleSerializer)["at"])
        return self._answer(broadcast)

    def _act(self, verb: str) -> Response:
        from apps.broadcasts import services

        self._valid(EmptySerializer)
        broadcast = self.get_object()
        getattr(services, f"broadcast_{verb}")(broadcast=broadcast)
        return self._answer(broadcast)

    @extend_schema(request=None, responses={200: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def start(self, request, pk=None):
        """Send now (a draft or a scheduled broadcast)."""
        return self._act("start")

    @extend_schema(request=None, responses={200: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def pause(self, request, pk=None):
        """Stop sending for now; nobody is skipped."""
        return self._act("pause")

    @extend_schema(request=None, responses={200: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def resume(self, request, pk=None):
        """Go on from where the pause left it."""
        return self._act("resume")

    @extend_schema(request=None, responses={200: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def cancel(self, request, pk=None):
        """Stop for good: those not yet sent to are not sent to."""
        return self._act("cancel")

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        """Sent, delivered, read, failed, replied, converted; the rate and the time left."""
        from apps.broadcasts.results import broadcast_stats

        return Response(broadcast_stats(broadcast=self.get_object()))


# Campaigns ------------------------------------------------------------------------------------


class CampaignSerializer(serializers.ModelSerializer):
    template = TemplateSummarySerializer(read_only=True)
    channel = serializers.PrimaryKeyRelatedField(read_only=True)
    segment = serializers.PrimaryKeyRelatedField(read_only=True)
    schedule = serializers.SerializerMethodField(help_text="Crontab, in `timezone`; null for back in stock.")
    timezone = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = (
            *("id", "name", "kind", "enabled", "channel", "template", "variables", "segment", "settings"),
            *("schedule", "timezone", "last_run_at", "created_at"),
        )
        read_only_fields = fields

    def get_schedule(self, campaign) -> str | None:
        if campaign.kind == Campaign.Kind.BACK_IN_STOCK:
            return None
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        return " ".join(getattr(campaign, name) for name in fields)

    def get_timezone(self, campaign) -> str:
        return campaign.workspace.timezone


class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    """The workspace's campaigns (defined in the admin); `run` makes one of its broadcasts now."""

    queryset = Campaign.objects.select_related("template", "workspace")
    serializer_class = CampaignSerializer
    filterset_fields = ("kind", "enabled")

    @extend_schema(request=None, responses={201: BroadcastSerializer})
    @action(detail=True, methods=["post"], serializer_class=EmptySerializer)
    def run(self, request, pk=None):
        """A scheduled campaign's broadcast, made and started now. 409 when it is disabled, a
        back-in-stock one (those run on a restock), or ran less than a minute ago."""
        from apps.broadcasts.campaigns import campaign_run

        EmptySerializer(data=request.data).is_valid(raise_exception=True)
        campaign = self.get_object()
        broadcast = campaign_run(campaign_id=campaign.pk, created_by=_actor(request))
        if broadcast is None:
            raise Conflict(
                "This campaign does not run now: it is disabled, runs on restocks, or has just run.",
                code="campaign_not_run",
            )
        return Response(BroadcastSerializer(broadcast).data, status=status.HTTP_201_CREATED)
