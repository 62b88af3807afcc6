from rest_framework import serializers

from apps.contacts.models import Contact, CustomFieldDefinition, Order, StockEvent, Tag
from apps.contacts.services import order_payload
from apps.core.api.serializers import StrictModelSerializer, StrictSerializerMixin, WorkspaceRelatedField


class ContactSerializer(serializers.ModelSerializer):
    """A contact as the API and the inbox's side panel show it (name, phone and email decrypted
    for members of its workspace only)."""

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


class ContactWriteSerializer(StrictSerializerMixin, serializers.Serializer):
    """What a back office may set; phone in any common format (stored as E.164)."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    email = serializers.EmailField(required=False, allow_blank=True)
    external_id = serializers.CharField(max_length=120, required=False, allow_blank=True)
    language = serializers.CharField(max_length=8, required=False, allow_blank=True)
    country = serializers.CharField(max_length=2, required=False, allow_blank=True)
    lifecycle_stage = serializers.ChoiceField(choices=Contact.Lifecycle.choices, required=False)
    last_purchase_at = serializers.DateTimeField(required=False, allow_null=True)
    custom_fields = serializers.DictField(required=False)
    marketing_consent = serializers.DictField(required=False)
    tags = WorkspaceRelatedField(queryset=Tag.objects.all(), many=True, required=False)


class ContactUpsertSerializer(ContactWriteSerializer):
    def validate(self, attrs):
        if not any(attrs.get(key) for key in ("external_id", "phone", "email")):
            raise serializers.ValidationError(
                {"external_id": ["Give an external_id, a phone or an email to match on."]}
            )
        return attrs


class ContactMergeSerializer(StrictSerializerMixin, serializers.Serializer):
    duplicate = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True))


class ContactTagsSerializer(StrictSerializerMixin, serializers.Serializer):
    tags = WorkspaceRelatedField(queryset=Tag.objects.all(), many=True)


class TagSerializer(StrictModelSerializer):
    class Meta:
        model = Tag
        fields = ("id", "name", "color")


class CustomFieldSerializer(StrictModelSerializer):
    class Meta:
        model = CustomFieldDefinition
        fields = ("id", "key", "label", "type", "choices")


class OrderItemSerializer(StrictSerializerMixin, serializers.Serializer):
    sku = serializers.CharField(max_length=120)
    name = serializers.CharField(max_length=300)
    qty = serializers.IntegerField(min_value=0, max_value=1_000_000)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, coerce_to_string=True)


class OrderCustomerSerializer(ContactWriteSerializer):
    id = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True), required=False)


class OrderSerializer(StrictSerializerMixin, serializers.Serializer):
    """An order event: upserted by `external_id`. The customer is named by `contact` (an id) or
    `customer` (matched, or created, by its external id, phone or email)."""

    external_id = serializers.CharField(max_length=120)
    status = serializers.ChoiceField(choices=Order.Status.choices)
    contact = WorkspaceRelatedField(queryset=Contact.objects.filter(merged_into__isnull=True), required=False)
    customer = OrderCustomerSerializer(required=False)
    items = OrderItemSerializer(many=True, required=False)
    total = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False)
    delivery_address = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    courier = serializers.CharField(max_length=120, required=False, allow_blank=True)
    tracking_number = serializers.CharField(max_length=120, required=False, allow_blank=True)
    tracking_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    placed_at = serializers.DateTimeField(required=False)

    def to_representation(self, instance):
        return order_payload(instance)


class OrderReadSerializer(serializers.ModelSerializer):
    contact_id = serializers.IntegerField(read_only=True, allow_null=True)
    tracking_url = serializers.CharField(read_only=True, help_text="Empty when the courier gave none.")

    class Meta:
        model = Order
        fields = (
            *("id", "external_id", "contact_id", "status", "items", "total", "currency"),
            *("delivery_address", "courier", "tracking_number", "tracking_url", "history", "placed_at", "updated_at"),
        )
        read_only_fields = fields


class StockEventSerializer(StrictModelSerializer):
    class Meta:
        model = StockEvent
        fields = ("id", "sku", "in_stock", "quantity", "restocked", "created_at")
        read_only_fields = ("id", "restocked", "created_at")


class OrderLookupSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["live", "pushed"])
    notice = serializers.CharField()
    orders = serializers.ListField(child=serializers.DictField())
