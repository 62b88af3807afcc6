from rest_framework import serializers

from apps.connectors.models import Channel


class ChannelSerializer(serializers.ModelSerializer):
    webhook_url = serializers.CharField(read_only=True)

    class Meta:
        model = Channel
        fields = ("id", "uuid", "kind", "name", "enabled", "rate_limit_per_second", "webhook_url", "created_at")
        read_only_fields = fields
