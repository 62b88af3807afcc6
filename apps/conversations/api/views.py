from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from apps.contacts.selectors import contact_match
from apps.conversations import selectors, services
from apps.conversations.api.filters import ConversationFilter
from apps.conversations.api.serializers import (
    ConversationAssignSerializer,
    ConversationCloseSerializer,
    ConversationCsatSerializer,
    ConversationSerializer,
    ConversationSnoozeSerializer,
    ConversationUpdateSerializer,
    EmptySerializer,
    MessageSendSerializer,
    MessageSerializer,
    MessageToContactSerializer,
    NotificationReadSerializer,
    NotificationSerializer,
)
from apps.conversations.models import Conversation, Message, Notification
from apps.conversations.selectors import message_timeline
from apps.core.api.pagination import CursorPagination
from apps.core.api.parsers import StrictJSONParser
from apps.core.api.viewsets import WorkspaceReadOnlyViewSet, WorkspaceViewSet
from apps.core.exceptions import NotFound


class TimelinePagination(CursorPagination):
    """Newest first, whatever the conversation list is ordered by."""

    def get_ordering(self, request, queryset, view):
        return ("-id",)


def _actor(request):
    return request.user if getattr(request.user, "pk", None) else None


class ConversationViewSet(WorkspaceReadOnlyViewSet):
    """The workspace's conversations, newest activity first; the inbox's list is this endpoint
    with `view`, `status`, the other filters and `q`. Acting on one (assign, close, …) is a POST
    to its action; any member may act on what is unassigned, theirs or their team's."""

    queryset = Conversation.objects.select_related("contact", "channel").prefetch_related("tags")
    serializer_class = ConversationSerializer
    filterset_class = ConversationFilter
    ordering = ("-last_message_at", "-id")
    ordering_fields = ("last_message_at", "id", "opened_at", "waiting_since", "queued_at")
    member_writes = True  # every write is an act on a conversation, checked by check_may_act

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "messages":  # a timeline or a reply needs the conversation itself, no more
            return queryset.prefetch_related(None)
        if self.action == "list":
            queryset = selectors.inbox_rows(queryset)
        return selectors.with_last_message(queryset)

    def filter_queryset(self, queryset):
        """The inbox's filters narrow the list; one conversation is found by its id alone (building
        the filter set for a reply was a fifth of its time)."""
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def _done(self, request, conversation) -> Response:
        conversation = self.get_queryset().get(pk=conversation.pk)
        return Response(ConversationSerializer(conversation).data)

    def _args(self, request) -> dict:
        return {
            "actor": _actor(request),
            "membership": request.membership,
            "origin": request.headers.get("X-Parley-Socket"),
        }

    def partial_update(self, request, pk=None):
        """PATCH priority, category and tags."""
        conversation = self.get_object()
        serializer = ConversationUpdateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        services.conversation_update(conversation=conversation, **self._args(request), **serializer.validated_data)
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ConversationAssignSerializer)
    def assign(self, request, pk=None):
        """Assign to a member and/or a team (null unassigns); with a `note` it is a transfer."""
        conversation = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.conversation_assign(conversation=conversation, **self._args(request), **serializer.validated_data)
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ConversationCloseSerializer)
    def close(self, request, pk=None):
        conversation = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.conversation_close(conversation=conversation, **self._args(request), **serializer.validated_data)
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ConversationCsatSerializer)
    def csat(self, request, pk=None):
        """Record the customer's satisfaction rating (1 to 5, with an optional comment) collected
        elsewhere, e.g. by the order system's own survey; emits `csat.submitted`."""
        conversation = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.conversation_csat_record(
            conversation=conversation, origin=request.headers.get("X-Parley-Socket"), **serializer.validated_data
        )
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=EmptySerializer)
    def reopen(self, request, pk=None):
        conversation = self.get_object()
        self.get_serializer(data=request.data).is_valid(raise_exception=True)
        services.conversation_reopen(conversation=conversation, **self._args(request))
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=ConversationSnoozeSerializer)
    def snooze(self, request, pk=None):
        conversation = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.conversation_snooze(conversation=conversation, **self._args(request), **serializer.validated_data)
        return self._done(request, conversation)

    @action(detail=True, methods=["post"], member_writes=True, serializer_class=EmptySerializer)
    def read(self, request, pk=None):
        """The operator has seen it: the unread count goes to zero."""
        conversation = self.get_object()
        services.conversation_mark_read(conversation=conversation, origin=request.headers.get("X-Parley-Socket"))
        return self._done(request, conversation)

    @action(
        detail=True,
        methods=["get", "post"],
        member_writes=True,
        serializer_class=MessageSendSerializer,
        parser_classes=[StrictJSONParser, MultiPartParser],
    )
    def messages(self, request, pk=None):
        """GET: the conversation's timeline. POST: send a message (or an internal note); as
        multipart/form-data with a `file`, send that file (`text` is its caption)."""
        conversation = self.get_object()
        if request.method == "GET":
            paginator = TimelinePagination()
            page = paginator.paginate_queryset(message_timeline(conversation=conversation), request, view=self)
            return paginator.get_paginated_response(MessageSerializer(page, many=True).data)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        reply_to = (
            Message.objects.filter(conversation=conversation, pk=data["reply_to"]).first()
            if data["reply_to"]
            else None
        )
        message = services.message_send(
            conversation=conversation,
            author=_actor(request),
            text=data["text"],
            kind=data["kind"],
            payload=data["payload"],
            client_id=data["client_id"],
            reply_to=reply_to,
            sender_kind=Message.Sender.AGENT,
            origin=request.headers.get("X-Parley-Socket"),
            upload=data["file"],
        )
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


class NotificationViewSet(WorkspaceReadOnlyViewSet):
    """My notifications in this workspace (assigned to me, mentioned me), newest first."""

    queryset = Notification.objects.all()
    serializer_class = NotificationSerializer
    filterset_fields = ("kind",)
    member_writes = True

    def get_queryset(self):
        return super().get_queryset().filter(recipient=self.request.membership)

    @action(detail=False, methods=["post"], serializer_class=NotificationReadSerializer)
    def read(self, request):
        """Mark mine read: the ones named by `ids`, or all."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if request.membership is None:
            return Response({"read": 0})
        count = services.notification_mark_read(
            membership=request.membership, ids=serializer.validated_data.get("ids")
        )
        return Response({"read": count})


class MessageViewSet(mixins.RetrieveModelMixin, WorkspaceViewSet):
    """Send a message to a person without opening a conversation first; read any message's
    delivery state (`GET messages/{id}/`)."""

    queryset = Message.objects.select_related("channel").prefetch_related("attachments")
    serializer_class = MessageSerializer
    parser_classes = [StrictJSONParser, MultiPartParser]

    def get_serializer_class(self):
        return MessageToContactSerializer if self.action == "create" else MessageSerializer

    def create(self, request):
        serializer = MessageToContactSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        contact = data.get("contact") or contact_match(
            workspace_id=request.workspace.pk, phone=data.get("phone", ""), external_id=data.get("external_id", "")
        )
        if contact is None:
            raise NotFound("No contact with that phone or external id.", code="contact_not_found")
        conversation = services.conversation_for_outbound(contact=contact, channel=data.get("channel"))
        message = services.message_send(
            conversation=conversation,
            author=_actor(request),
            text=data["text"],
            kind=data["kind"],
            payload=data["payload"],
            client_id=data["client_id"],
            sender_kind=Message.Sender.AGENT if _actor(request) else Message.Sender.BOT,
            upload=data["file"],
        )
        body = {**MessageSerializer(message).data, "conversation_id": conversation.pk, "contact_id": contact.pk}
        return Response(body, status=status.HTTP_201_CREATED)
