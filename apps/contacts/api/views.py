from rest_framework.decorators import action
from rest_framework.response import Response

from apps.contacts import selectors, services
from apps.contacts.api.serializers import ContactMergeSerializer, ContactSerializer
from apps.contacts.models import Contact
from apps.conversations.api.serializers import ConversationSerializer, MessageSerializer
from apps.conversations.api.views import TimelinePagination
from apps.conversations.selectors import contact_conversations, contact_timeline
from apps.core.api.viewsets import WorkspaceReadOnlyViewSet
from apps.core.exceptions import DomainError


class ContactViewSet(WorkspaceReadOnlyViewSet):
    """The workspace's contacts (merged-away duplicates are gone), with their conversations on
    every channel, their whole timeline across channels, merge candidates and merging."""

    queryset = (
        Contact.objects.filter(merged_into__isnull=True)
        .prefetch_related("tags", "identities__channel")
        .order_by("-id")
    )
    serializer_class = ContactSerializer
    filterset_fields = ("lifecycle_stage", "external_id", "tags")

    @action(detail=True, methods=["get"])
    def conversations(self, request, pk=None):
        rows = contact_conversations(contact=self.get_object())
        return Response(ConversationSerializer(rows, many=True).data)

    @action(detail=True, methods=["get"])
    def timeline(self, request, pk=None):
        """Every message with this person on every channel, newest first (each names its channel)."""
        paginator = TimelinePagination()
        page = paginator.paginate_queryset(contact_timeline(contact=self.get_object()), request, view=self)
        return paginator.get_paginated_response(MessageSerializer(page, many=True).data)

    @action(detail=True, methods=["get"])
    def duplicates(self, request, pk=None):
        rows = selectors.contact_duplicates(contact=self.get_object()).prefetch_related("tags", "identities__channel")
        return Response(ContactSerializer(rows, many=True).data)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ContactMergeSerializer)
    def merge(self, request, pk=None):
        """Moves the duplicate's identities, conversations, tags and fields into this contact."""
        survivor = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        duplicate = serializer.validated_data["duplicate"]
        if duplicate.pk == survivor.pk:
            raise DomainError("A contact cannot be merged into itself.", code="invalid_merge")
        survivor = services.contact_merge(survivor=survivor, duplicate=duplicate)
        return Response(ContactSerializer(self.get_queryset().get(pk=survivor.pk)).data)
