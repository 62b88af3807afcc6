from rest_framework import serializers

from apps.connectors.models import Channel
from apps.contacts.models import Contact, Tag
from apps.conversations import payloads, selectors
from apps.conversations.models import Conversation, Message, Notification
from apps.core.api.serializers import StrictSerializerMixin, WorkspaceRelatedField
from apps.workspaces.models import Membership, Team


class ConversationSerializer(serializers.ModelSerializer):
    contact_name = serializers.CharField(source="contact.name", read_only=True)
    channel_kind = serializers.CharField(source="channel.kind", read_only=True)
    bot = serializers.CharField(
        read_only=True, allow_null=True, help_text="The workflow handling the conversation now, or null."
    )

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
            "queued_at",
            "bot",
        )
        read_only_fields = fields

    def to_representation(self, instance):
        # The inbox row (payloads.conversation_event) plus the ids under the API's field names;
        # built by hand because the list serializes 50 rows a request on the inbox's hot path.
        selectors.contact_unsealed(instance)
        return {
            **payloads.conversation_event(instance),
            "contact": instance.contact_id,
            "channel": instance.channel_id,
            "assignee": instance.assignee_id,
            "team": instance.team_id,
            "opened_at": _iso(instance.opened_at),
            "first_response_at": _iso(instance.first_response_at),
            "last_message": getattr(instance, "last_message", None),
        }


_MOMENT = serializers.DateTimeField()  # unbound, so one serves every row (it keeps no state)


def _iso(moment) -> str | None:
    return _MOMENT.to_representation(moment) if moment else None


class ConversationUpdateSerializer(StrictSerializerMixin, serializers.Serializer):
    priority = serializers.ChoiceField(choices=Conversation.Priority.choices, required=False)
    category = serializers.CharField(max_length=60, allow_blank=True, required=False)
    tags = WorkspaceRelatedField(queryset=Tag.objects.all(), many=True, required=False)


class ConversationAssignSerializer(StrictSerializerMixin, serializers.Serializer):
    """Absent fields stay as they are; null unassigns. A note makes it a transfer."""

    assignee = WorkspaceRelatedField(queryset=Membership.objects.all(), allow_null=True, required=False)
    team = WorkspaceRelatedField(queryset=Team.objects.all(), allow_null=True, required=False)
    note = serializers.CharField(max_length=4096, allow_blank=True, required=False, default="")


class ConversationCloseSerializer(StrictSerializerMixin, serializers.Serializer):
    category = serializers.CharField(max_length=60, allow_blank=True, required=False, default="")
    summary = serializers.CharField(max_length=4096, allow_blank=True, required=False, default="")


class ConversationCsatSerializer(StrictSerializerMixin, serializers.Serializer):
    score = serializers.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField(max_length=4096, allow_blank=True, required=False, default="")


class ConversationSnoozeSerializer(StrictSerializerMixin, serializers.Serializer):
    until = serializers.DateTimeField()


class EmptySerializer(StrictSerializerMixin, serializers.Serializer):
    pass


class MessageSerializer(serializers.ModelSerializer):
    @classmethod
    def many_init(cls, *args, **kwargs):
        page = args[0] if args else kwargs.get("instance")
        if isinstance(page, list):
            selectors.messages_attachments_load(page)  # a thread's page: its attachments in one query
        return super().many_init(*args, **kwargs)

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


class NotificationSerializer(serializers.ModelSerializer):
    def to_representation(self, instance):
        return payloads.notification_event(instance)

    class Meta:
        model = Notification
        fields = ("id",)


class NotificationReadSerializer(StrictSerializerMixin, serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=500)


class MessageToContactSerializer(StrictSerializerMixin, serializers.Serializer):
    """A message to a person, named by `contact` (id), `phone` or `external_id`, on `channel` or
    the one they used last. `kind`: text; media (`payload.media_url`, or a multipart `file`);
    interactive (`payload.options`: up to 3 buttons, else a list of up to 10); template
    (`payload`: `{"name", "language", "parameters"}` or `{"template_id", "parameters"}`)."""

    contact = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True), required=False)
    phone = serializers.CharField(max_length=40, required=False)
    external_id = serializers.CharField(max_length=120, required=False)
    channel = WorkspaceRelatedField(queryset=Channel.objects.filter(enabled=True), required=False)
    kind = serializers.ChoiceField(
        choices=[Message.Kind.TEXT, Message.Kind.MEDIA, Message.Kind.INTERACTIVE, Message.Kind.TEMPLATE],
        default=Message.Kind.TEXT,
    )
    text = serializers.CharField(max_length=4096, required=False, allow_blank=True, default="")
    payload = serializers.JSONField(required=False, default=dict)
    file = serializers.FileField(required=False, allow_empty_file=False, default=None)
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")

    def validate_payload(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be an object.")
        return value

    def validate(self, attrs):
        named = [key for key in ("contact", "phone", "external_id") if attrs.get(key)]
        if len(named) != 1:
            raise serializers.ValidationError(
                {"contact": ["Name the person by exactly one of contact, phone, external_id."]}
            )
        if attrs["kind"] == Message.Kind.MEDIA and not (attrs.get("file") or attrs["payload"].get("media_url")):
            raise serializers.ValidationError({"payload": ["A media message needs payload.media_url or a file."]})
        if attrs["kind"] == Message.Kind.INTERACTIVE and not attrs["payload"].get("options"):
            raise serializers.ValidationError({"payload": ["An interactive message needs payload.options."]})
        return attrs
