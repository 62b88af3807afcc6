from rest_framework import serializers

from apps.connectors.models import Channel, MessageTemplate


class ChannelSerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(read_only=True)

    class Meta:
        model = Channel
        fields = ("id", "uuid", "kind", "name", "enabled", "rate_limit_per_second", "webhook_url", "created_at")
        read_only_fields = fields


class MessageTemplateSerializer(serializers.ModelSerializer):
    variable_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = MessageTemplate
        fields = ("id", "channel", "name", "language", "category", "body", "example", "status", "variable_count")
        read_only_fields = fields
