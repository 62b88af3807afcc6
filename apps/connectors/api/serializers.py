from rest_framework import serializers

from apps.connectors.models import WEBHOOK_EVENTS, Channel, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.connectors.templates import DRAFT_FIELDS
from apps.core.api.serializers import StrictModelSerializer, StrictSerializerMixin, WorkspaceRelatedField


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
            *DRAFT_FIELDS,
            "status",
            "rejected_reason",
            "quality",
            "provider_id",
            "synced_at",
            "variable_count",
            "variables",
        )
        read_only_fields = fields

    def get_variables(self, template) -> list[dict]:
        """What a send needs, in order (header, body, buttons): one value each."""
        return [{"slot": variable.slot, "label": variable.label} for variable in template.variables]


class MessageTemplateDraftSerializer(StrictSerializerMixin, serializers.Serializer):
    """A draft's content (checked whole by the service: names, limits, variables, examples). Its
    channel is chosen when it is made; to change a submitted template, copy it to a new draft."""

    name = serializers.CharField(max_length=512, help_text="Lower-case letters, digits and underscores.")
    language = serializers.CharField(max_length=15, help_text="e.g. en, en_US, ar")
    category = serializers.ChoiceField(choices=MessageTemplate.Category.choices)
    parameter_format = serializers.ChoiceField(choices=MessageTemplate.ParameterFormat.choices, required=False)
    header_format = serializers.ChoiceField(
        choices=MessageTemplate.HeaderFormat.choices, required=False, allow_blank=True
    )
    header = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    body = serializers.CharField(help_text="With variables: Hi {{1}}, your order {{2}} has shipped.")
    footer = serializers.CharField(max_length=60, required=False, allow_blank=True)
    buttons = serializers.JSONField(required=False, help_text=MessageTemplate._meta.get_field("buttons").help_text)
    example = serializers.JSONField(required=False, help_text=MessageTemplate._meta.get_field("example").help_text)


class MessageTemplateCreateSerializer(MessageTemplateDraftSerializer):
    channel = WorkspaceRelatedField(queryset=Channel.objects.all())


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


class WebhookSubscriptionCreatedSerializer(WebhookSubscriptionSerializer):
    """The answer to the creating POST: the subscription and, this once, its signing secret."""

    secret = serializers.CharField(read_only=True, help_text="Shown only here: keep it to verify X-Parley-Signature.")

    class Meta(WebhookSubscriptionSerializer.Meta):
        fields = (*WebhookSubscriptionSerializer.Meta.fields, "secret")


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
