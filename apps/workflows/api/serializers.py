import re

from rest_framework import serializers

from apps.connectors.models import Channel
from apps.contacts.models import Contact
from apps.conversations.models import Conversation
from apps.core.api.serializers import StrictModelSerializer, StrictSerializerMixin, WorkspaceRelatedField
from apps.workflows.models import FaqEntry, Run, RunLog, Workflow

LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,4})?$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
MAX_VARIABLES = 50


def _language(value: str) -> str:
    value = value.strip().lower()
    if value and not LANGUAGE.match(value):
        raise serializers.ValidationError('A language code such as "en", "ru" or "zh-hant".')
    return value


class FaqEntrySerializer(StrictModelSerializer):
    """One intent's answer in one language, with the phrasings customers use for it."""

    examples = serializers.ListField(
        child=serializers.CharField(max_length=500, allow_blank=False),
        min_length=1,
        max_length=50,
        help_text="How customers ask it, 1 to 50 phrasings of up to 500 characters; ten or so work well.",
    )
    answer = serializers.CharField(max_length=4096)

    class Meta:
        model = FaqEntry
        fields = ("id", "intent", "language", "examples", "answer", "follow_up", "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")

    def validate_language(self, value: str) -> str:
        value = _language(value)
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        return value


class FaqMatchRequestSerializer(StrictSerializerMixin, serializers.Serializer):
    text = serializers.CharField(max_length=2000, help_text="The customer's message.")
    language = serializers.CharField(
        max_length=8, required=False, allow_blank=True, default="", help_text="Prefer answers in this language."
    )

    def validate_language(self, value: str) -> str:
        return _language(value)


class FaqMatchSerializer(serializers.Serializer):
    faq = serializers.IntegerField(allow_null=True, help_text="The FAQ entry the bot would answer with, or null.")
    intent = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField(min_value=0, max_value=1)


class WorkflowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Workflow
        fields = (
            *("id", "name", "description", "enabled", "trigger", "trigger_settings", "priority", "version"),
            "last_run_at",
        )
        read_only_fields = fields


class WorkflowDetailSerializer(WorkflowSerializer):
    definition = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The published version's definition (as exported); null if none."
    )

    class Meta(WorkflowSerializer.Meta):
        fields = (*WorkflowSerializer.Meta.fields, "definition")
        read_only_fields = fields


class WorkflowEnableSerializer(StrictSerializerMixin, serializers.Serializer):
    enabled = serializers.BooleanField()


class RunStartSerializer(StrictSerializerMixin, serializers.Serializer):
    """Name the conversation, or the contact (and optionally the channel: else the one they used
    last). `replace` stops a workflow the conversation already follows instead of refusing."""

    conversation = WorkspaceRelatedField(queryset=Conversation.objects.all(), required=False)
    contact = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True), required=False)
    channel = WorkspaceRelatedField(queryset=Channel.objects.filter(enabled=True), required=False)
    variables = serializers.DictField(required=False, default=dict, help_text="Start values of `{{vars.<name>}}`.")
    replace = serializers.BooleanField(required=False, default=False)

    def validate_variables(self, value: dict) -> dict:
        if len(value) > MAX_VARIABLES:
            raise serializers.ValidationError(f"At most {MAX_VARIABLES} variables.")
        bad = sorted(name for name in value if not VARIABLE_NAME.match(name))
        if bad:
            raise serializers.ValidationError(f"Names are letters, digits and _ (at most 40): {', '.join(bad)[:200]}")
        return value

    def validate(self, attrs):
        if ("conversation" in attrs) == ("contact" in attrs):
            raise serializers.ValidationError({"conversation": ["Name exactly one of conversation or contact."]})
        if "channel" in attrs and "conversation" in attrs:
            raise serializers.ValidationError({"channel": ["Only with a contact: a conversation has its channel."]})
        return attrs


class RunLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunLog
        fields = ("step", "kind", "outcome", "detail", "version", "at")
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)

    class Meta:
        model = Run
        fields = (
            *("id", "workflow", "workflow_name", "version", "conversation", "state", "step", "variables"),
            *("steps_taken", "outcome", "started_at", "updated_at", "finished_at"),
        )
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    log = RunLogSerializer(many=True, read_only=True, help_text="Every step the run took, oldest first.")

    class Meta(RunSerializer.Meta):
        fields = (*RunSerializer.Meta.fields, "log")
        read_only_fields = fields


class CallbackAnswerSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
