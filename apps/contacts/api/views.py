from django.db import transaction
from django.http import FileResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, status
from rest_framework import serializers as drf_serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.contacts import privacy, selectors, services
from apps.contacts.api.serializers import (
    ContactMergeSerializer,
    ContactSerializer,
    ContactTagsSerializer,
    ContactUpsertSerializer,
    ContactWriteSerializer,
    CustomFieldSerializer,
    OrderLookupSerializer,
    OrderReadSerializer,
    OrderSerializer,
    StockEventSerializer,
    TagSerializer,
)
from apps.contacts.models import Contact, CustomFieldDefinition, Order, StockEvent, Tag
from apps.conversations.api.serializers import ConversationSerializer, MessageSerializer
from apps.conversations.api.views import TimelinePagination
from apps.conversations.selectors import contact_conversations, contact_timeline
from apps.core.api.filters import IdFilter, MomentFilter
from apps.core.api.viewsets import WorkspaceModelViewSet, WorkspaceViewSet
from apps.core.exceptions import DomainError, PermissionDenied
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record


class ContactFilter(filters.FilterSet):
    updated_since = MomentFilter(field_name="last_seen_at", lookup_expr="gte")
    created_since = MomentFilter(field_name="created_at", lookup_expr="gte")
    tag = IdFilter(field_name="tags")

    class Meta:
        model = Contact
        fields = ("lifecycle_stage", "external_id", "tag", "language", "country")


class ContactViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    WorkspaceViewSet,
):
    """The workspace's contacts (merged-away duplicates are gone). Create, update and upsert
    them; their tags; their conversations on every channel and whole timeline; merging."""

    queryset = (
        Contact.objects.filter(merged_into__isnull=True)
        .prefetch_related("tags", "identities__channel")
        .order_by("-id")
    )
    serializer_class = ContactSerializer
    filterset_class = ContactFilter

    def _answer(self, contact, code=status.HTTP_200_OK) -> Response:
        return Response(ContactSerializer(self.get_queryset().get(pk=contact.pk)).data, status=code)

    def _valid(self, serializer_class, data=None):
        serializer = serializer_class(
            data=self.request.data if data is None else data, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def get_serializer_class(self):
        writes = {"create": ContactWriteSerializer, "partial_update": ContactWriteSerializer}
        return writes.get(self.action, super().get_serializer_class())

    @extend_schema(request=ContactWriteSerializer, responses={201: ContactSerializer})
    def create(self, request):
        contact = services.contact_save(workspace_id=request.workspace.pk, data=self._valid(ContactWriteSerializer))
        return self._answer(contact, status.HTTP_201_CREATED)

    @extend_schema(request=ContactWriteSerializer, responses={200: ContactSerializer})
    def partial_update(self, request, pk=None):
        contact = self.get_object()
        data = self._valid(ContactWriteSerializer)
        services.contact_save(workspace_id=request.workspace.pk, contact=contact, data=data)
        return self._answer(contact)

    @extend_schema(responses={200: ContactSerializer, 201: ContactSerializer})
    @action(detail=False, methods=["post"], serializer_class=ContactUpsertSerializer)
    def upsert(self, request):
        """Create or update in one call, matched by external id, then phone, then email."""
        contact, created = services.contact_upsert(
            workspace_id=request.workspace.pk, data=self._valid(ContactUpsertSerializer)
        )
        return self._answer(contact, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=ContactTagsSerializer, responses={200: ContactSerializer})
    @action(detail=True, methods=["post", "delete"], serializer_class=ContactTagsSerializer)
    def tags(self, request, pk=None):
        """POST adds the tags named; DELETE removes them (its body names them the same way:
        `{"tags": [<tag id>, …]}`). Both answer the contact as it now is."""
        contact = self.get_object()
        tags = self._valid(ContactTagsSerializer)["tags"]
        if request.method == "POST":
            services.contact_tags_change(contact=contact, add=tags)
        else:
            services.contact_tags_change(contact=contact, remove=tags)
        return self._answer(contact)

    # These three answer lists that are not the contacts list: none of its filters or ordering
    # apply (the schema said they did, and a filter made the contact itself a 404).
    @extend_schema(responses=ConversationSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def conversations(self, request, pk=None):
        """The person's conversations on every channel (one per channel), as a plain list."""
        rows = contact_conversations(contact=self.get_object())
        return Response(ConversationSerializer(rows, many=True).data)

    @extend_schema(responses=MessageSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=TimelinePagination, filter_backends=[])
    def timeline(self, request, pk=None):
        """Every message with this person on every channel, newest first (each names its channel),
        a page at a time (`limit`, then `cursor` from `next`)."""
        page = self.paginate_queryset(contact_timeline(contact=self.get_object()))
        return self.get_paginated_response(MessageSerializer(page, many=True).data)

    @extend_schema(responses={200: OrderLookupSerializer})
    @action(detail=True, methods=["get"])
    def orders(self, request, pk=None):
        """The customer's orders: live from the order system when the workspace has a lookup URL
        (`source: live`), else what it pushed (`source: pushed`, with a `notice` when the live
        call failed)."""
        return Response(selectors.orders_for_contact(contact=self.get_object()))

    @extend_schema(responses=ContactSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def duplicates(self, request, pk=None):
        """Other contacts with the same phone or email (merge candidates), oldest first, as a plain list."""
        rows = selectors.contact_duplicates(contact=self.get_object()).prefetch_related("tags", "identities__channel")
        return Response(ContactSerializer(rows, many=True).data)

    @extend_schema(request=ContactMergeSerializer, responses={200: ContactSerializer})
    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ContactMergeSerializer)
    def merge(self, request, pk=None):
        """Moves the duplicate's identities, conversations, tags and fields into this contact."""
        survivor = self.get_object()
        duplicate = self._valid(ContactMergeSerializer)["duplicate"]
        if duplicate.pk == survivor.pk:
            raise DomainError("A contact cannot be merged into itself.", code="invalid_merge")
        with transaction.atomic():
            survivor = services.contact_merge(survivor=survivor, duplicate=duplicate)
            audit_record(
                action=AuditEntry.Action.CHANGE, obj=survivor, details={"merged": duplicate.pk}, request=request
            )
        return self._answer(survivor)

    @extend_schema(
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="contact.json + files/")}
    )
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        """Everything Parley holds about the person (data subject access): a ZIP with
        `contact.json` and their attachments under `files/`. Owners, supervisors and API tokens."""
        self._require_write_role(request)
        contact = self.get_object()
        archive = privacy.contact_export(contact=contact, request=request)
        return FileResponse(archive, as_attachment=True, filename=privacy.contact_export_filename(contact))

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "ContactErased",
                {
                    "conversations": drf_serializers.IntegerField(),
                    "messages": drf_serializers.IntegerField(),
                    "files": drf_serializers.IntegerField(),
                    "identities": drf_serializers.IntegerField(),
                },
            )
        },
    )
    @action(detail=True, methods=["post"])
    def erase(self, request, pk=None):
        """Erases the person's personal data (right to erasure); the contact stays as an anonymous
        row so counts and reports hold. Returns what was erased. Owners, supervisors, API tokens."""
        counts = privacy.contact_erase(contact=self.get_object(), request=request)
        return Response(counts)

    def perform_destroy(self, instance):
        audit_record(action=AuditEntry.Action.DELETE, obj=instance, request=self.request)
        instance.delete()

    def _require_write_role(self, request) -> None:
        # A GET, so the permission class lets every member through; an export is not an agent's.
        if request.workspace_role not in self.write_roles:
            raise PermissionDenied("Only owners, supervisors and API tokens can export a contact's data.")


class TagViewSet(WorkspaceModelViewSet):
    queryset = Tag.objects.all()
    serializer_class = TagSerializer
    filterset_fields = ("name",)


class CustomFieldViewSet(WorkspaceModelViewSet):
    queryset = CustomFieldDefinition.objects.all()
    serializer_class = CustomFieldSerializer
    filterset_fields = ("key", "type")


class OrderFilter(filters.FilterSet):
    updated_since = MomentFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Order
        fields = ("contact", "status", "external_id")


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, WorkspaceViewSet):
    """Orders as the order system reports them. POST is an upsert by `external_id`: post every
    event (created, paid, shipped, delivered, cancelled, refunded) of an order to the same place."""

    queryset = Order.objects.all()
    serializer_class = OrderReadSerializer
    filterset_class = OrderFilter

    def get_serializer_class(self):
        return OrderSerializer if self.action == "create" else OrderReadSerializer

    @extend_schema(request=OrderSerializer, responses={200: OrderReadSerializer, 201: OrderReadSerializer})
    def create(self, request):
        serializer = OrderSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        contact = data.pop("contact", None)
        customer = data.pop("customer", None)
        if contact is None and customer:
            contact = customer.pop("id", None)
            if contact is None and any(customer.get(k) for k in ("external_id", "phone", "email")):
                contact, _ = services.contact_upsert(workspace_id=request.workspace.pk, data=customer)
        if "items" in data:
            data["items"] = [{**item, "price": str(item["price"])} for item in data["items"]]
        order, created = services.order_upsert(workspace_id=request.workspace.pk, data=data, contact=contact)
        return Response(
            OrderReadSerializer(order).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class StockEventViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, WorkspaceViewSet):
    """`{"sku", "in_stock", "quantity"}` from the order system; `restocked` says it came back."""

    queryset = StockEvent.objects.all()
    serializer_class = StockEventSerializer
    filterset_fields = ("sku", "in_stock", "restocked")

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.stock_event_record(
            workspace_id=self.request.workspace.pk,
            sku=data["sku"],
            in_stock=data["in_stock"],
            quantity=data.get("quantity"),
        )
