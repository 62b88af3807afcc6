from rest_framework import serializers

from apps.conversations import payloads
from apps.conversations.models import Conversation, Message
from apps.core.api.serializers import StrictSerializerMixin


class ConversationSerializer(serializers.ModelSerializer):
    contact_name = serializers.CharField(source="contact.name", read_only=True)
    channel_kind = serializers.CharField(source="channel.kind", read_only=True)

    class Meta:
        model = Conversation
        fields = (
            "id",
            "contact",
            "contact_name",
            "channel",
            "channel_kind",
            "status",
            "assignee",
            "team",
            "category",
            "priority",
            "language",
            "window_expires_at",
            "opened_at",
            "first_response_at",
            "closed_at",
            "last_message_at",
            "waiting_since",
            "unread_count",
            "authorized",
        )
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer):
    def to_representation(self, instance):
        return payloads.message_event(instance)

    class Meta:
        model = Message
        fields = ("id",)


class MessageSendSerializer(StrictSerializerMixin, serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, max_length=4096, default="")
    kind = serializers.ChoiceField(
        choices=[Message.Kind.TEXT, Message.Kind.INTERACTIVE, Message.Kind.TEMPLATE, Message.Kind.NOTE],
        default=Message.Kind.TEXT,
    )
    payload = serializers.JSONField(required=False, default=dict)
    client_id = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    reply_to = serializers.IntegerField(required=False, allow_null=True, default=None)
    file = serializers.FileField(required=False, allow_empty_file=False, default=None)

    def validate_payload(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be an object.")
        return value
