from rest_framework import serializers

from apps.connectors.models import WEBHOOK_EVENTS, Channel, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.core.api.serializers import StrictModelSerializer


class ChannelSerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(read_only=True)

    class Meta:
        model = Channel
        fields = ("id", "uuid", "kind", "name", "enabled", "rate_limit_per_second", "webhook_url", "created_at")
        read_only_fields = fields


class MessageTemplateSerializer(serializers.ModelSerializer):
    variable_count = serializers.IntegerField(read_only=True)
    variables = serializers.SerializerMethodField()

    class Meta:
        model = MessageTemplate
        fields = (
            "id",
            "channel",
            "name",
            "language",
            "category",
            "parameter_format",
            "header_format",
            "header",
            "body",
            "footer",
            "buttons",
            "example",
            "status",
            "rejected_reason",
            "synced_at",
            "variable_count",
            "variables",
        )
        read_only_fields = fields

    def get_variables(self, template) -> list[dict]:
        """What a send needs, in order (header, body, buttons): one value each."""
        return [{"slot": variable.slot, "label": variable.label} for variable in template.variables]


class WebhookSubscriptionSerializer(StrictModelSerializer):
    """The signing secret is shown once, in the answer to the POST that creates the subscription."""

    events = serializers.ListField(child=serializers.ChoiceField(choices=WEBHOOK_EVENTS), min_length=1)

    class Meta:
        model = WebhookSubscription
        fields = (
            "id",
            "url",
            "events",
            "description",
            "enabled",
            "consecutive_failures",
            "disabled_reason",
            "created_at",
        )
        read_only_fields = ("id", "consecutive_failures", "disabled_reason", "created_at")

    def validate_url(self, value):
        if not value.startswith(("https://", "http://")):
            raise serializers.ValidationError("Use an http(s) URL.")
        return value


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "event_id",
            "event",
            "state",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_response",
            "last_error",
            "created_at",
            "delivered_at",
        )
        read_only_fields = fields
