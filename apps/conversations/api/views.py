from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.conversations import services
from apps.conversations.api.serializers import ConversationSerializer, MessageSendSerializer, MessageSerializer
from apps.conversations.models import Conversation, Message
from apps.conversations.selectors import message_timeline
from apps.core.api.viewsets import WorkspaceReadOnlyViewSet


class ConversationViewSet(WorkspaceReadOnlyViewSet):
    queryset = Conversation.objects.select_related("contact", "channel")
    serializer_class = ConversationSerializer
    filterset_fields = ("status", "channel", "assignee", "team", "contact")
    ordering = "-id"

    @action(detail=True, methods=["get", "post"], member_writes=True, serializer_class=MessageSendSerializer)
    def messages(self, request, pk=None):
        """GET: the conversation's timeline. POST: send a message (or an internal note); as
        multipart/form-data with a `file`, send that file (`text` is its caption)."""
        conversation = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(message_timeline(conversation=conversation).order_by("-id"))
            return self.get_paginated_response(MessageSerializer(page, many=True).data)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        reply_to = (
            Message.objects.filter(conversation=conversation, pk=data["reply_to"]).first()
            if data["reply_to"]
            else None
        )
        author = request.user if getattr(request.user, "pk", None) else None
        message = services.message_send(
            conversation=conversation,
            author=author,
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
