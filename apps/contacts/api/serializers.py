from rest_framework import serializers

from apps.contacts.models import Contact
from apps.core.api.serializers import StrictSerializerMixin, WorkspaceRelatedField


class ContactSerializer(serializers.ModelSerializer):
    """A contact as the inbox's side panel shows it (name, phone and email decrypted for members
    of its workspace only)."""

    tags = serializers.SerializerMethodField()
    channels = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = (
            "id",
            "name",
            "phone",
            "email",
            "external_id",
            "language",
            "country",
            "custom_fields",
            "tags",
            "lifecycle_stage",
            "last_purchase_at",
            "marketing_consent",
            "channels",
            "created_at",
            "last_seen_at",
        )
        read_only_fields = fields

    def get_tags(self, contact) -> list[dict]:
        return [{"id": tag.id, "name": tag.name, "color": tag.color} for tag in contact.tags.all()]

    def get_channels(self, contact) -> list[dict]:
        return [
            {"channel_id": identity.channel_id, "kind": identity.channel.kind, "reachable": identity.reachable}
            for identity in contact.identities.all()
        ]


class ContactMergeSerializer(StrictSerializerMixin, serializers.Serializer):
    duplicate = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True))
