import uuid

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedTextField
from apps.workspaces.models import WorkspaceScoped


class InboundEvent(WorkspaceScoped):
    """A provider's webhook delivery exactly as it arrived (encrypted: it carries phones and
    names), kept so it is acknowledged fast, processed by a worker, and replayable when it
    failed."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSED = "processed", _("Processed")
        FAILED = "failed", _("Failed")

    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="inbound_events")
    body = EncryptedTextField()
    headers = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text=_("When a worker took it to apply."))

    class Meta:
        indexes = [
            models.Index(fields=["state", "received_at"], name="inbound_event_by_state"),
            # The drainers' queue: only pending rows, oldest first.
            models.Index(fields=["id"], condition=Q(state="pending"), name="inbound_event_pending"),
        ]
        ordering = ["-received_at"]
        verbose_name = _("inbound event")
        verbose_name_plural = _("inbound events")

    def __str__(self) -> str:
        return f"{self.channel} {self.received_at:%Y-%m-%d %H:%M:%S} {self.state}"


class Conversation(WorkspaceScoped):
    """A contact's thread on one channel. It is never duplicated: a closed conversation reopens
    when the customer writes again."""

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        PENDING = "pending", _("Pending")
        SNOOZED = "snoozed", _("Snoozed")
        CLOSED = "closed", _("Closed")

    class Priority(models.TextChoices):
        LOW = "low", _("Low")
        NORMAL = "normal", _("Normal")
        HIGH = "high", _("High")
        URGENT = "urgent", _("Urgent")

    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="conversations")
    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="conversations")
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        "workspaces.Membership",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )
    team = models.ForeignKey(
        "workspaces.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )
    category = models.CharField(_("category"), max_length=60, blank=True)
    priority = models.CharField(_("priority"), max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    language = models.CharField(_("language"), max_length=8, blank=True)
    window_expires_at = models.DateTimeField(_("reply window closes"), null=True, blank=True)
    opened_at = models.DateTimeField(_("opened"), auto_now_add=True)
    first_response_at = models.DateTimeField(_("first response"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(
        null=True, blank=True, help_text=_("The customer's oldest unanswered message.")
    )
    unread_count = models.PositiveIntegerField(default=0)
    authorized = models.BooleanField(
        _("authorized"), default=False, help_text=_("The shop's site vouched for the customer's identity (web chat).")
    )
    csat_score = models.PositiveSmallIntegerField(null=True, blank=True)
    csat_comment = models.TextField(blank=True)
    csat_agent = models.ForeignKey(
        "workspaces.Membership",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rated_conversations",
        help_text=_("Who handled the conversation the customer rated."),
    )
    queued_at = models.DateTimeField(
        _("queued since"),
        null=True,
        blank=True,
        help_text=_("Waiting in its team's queue for a free agent; the longest waiting is assigned first."),
    )
    automation_cursor = models.BigIntegerField(
        default=0, editable=False, help_text=_("The last customer message the workflows have seen.")
    )
    tags = models.ManyToManyField("contacts.Tag", blank=True, related_name="conversations", verbose_name=_("tags"))
    closing_summary = models.TextField(_("closing summary"), blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "channel"], name="conversation_one_per_channel")]
        # The inbox's views: everything by status, mine, a team's; newest activity first.
        indexes = [
            models.Index(fields=["workspace", "-last_message_at", "-id"], name="conversation_recent"),
            models.Index(fields=["workspace", "status", "-last_message_at"], name="conversation_inbox"),
            # Mine and a team's, newest first: the list reads its 50 rows in index order and
            # filters any status on the way (bench/inbox.py has the plans).
            models.Index(fields=["workspace", "assignee", "-last_message_at", "-id"], name="conversation_mine_recent"),
            models.Index(fields=["workspace", "team", "-last_message_at", "-id"], name="conversation_team_recent"),
            # A team's queue, longest waiting first.
            models.Index(
                fields=["team", "queued_at"], condition=Q(queued_at__isnull=False), name="conversation_team_queue"
            ),
        ]
        ordering = ["-last_message_at"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")

    def __str__(self) -> str:
        return f"#{self.pk} {self.contact} on {self.channel}"


class DeliveryState(models.TextChoices):
    RECEIVED = "received", _("Received")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    READ = "read", _("Read")
    FAILED = "failed", _("Failed")


# Status callbacks arrive out of order; only a higher state replaces a lower one.
DELIVERY_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "read": 4}


class Message(WorkspaceScoped):
    class Direction(models.TextChoices):
        INBOUND = "in", _("Inbound")
        OUTBOUND = "out", _("Outbound")

    class Sender(models.TextChoices):
        CONTACT = "contact", _("Contact")
        AGENT = "agent", _("Agent")
        BOT = "bot", _("Bot")
        SYSTEM = "system", _("System")

    class Kind(models.TextChoices):
        TEXT = "text", _("Text")
        MEDIA = "media", _("Media")
        INTERACTIVE = "interactive", _("Interactive")
        TEMPLATE = "template", _("Template")
        LOCATION = "location", _("Location")
        REACTION = "reaction", _("Reaction")
        CONTACTS = "contacts", _("Contacts")
        UNSUPPORTED = "unsupported", _("Unsupported")
        NOTE = "note", _("Internal note")
        EVENT = "event", _("System event")

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    sender_kind = models.CharField(max_length=8, choices=Sender.choices)
    author = models.ForeignKey(
        "workspaces.User",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="authored_messages",
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.TEXT)
    text = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    reply_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    provider_id = models.CharField(max_length=191, blank=True)
    client_id = models.CharField(max_length=64, blank=True, help_text=_("The sender's idempotency key."))
    state = models.CharField(max_length=10, choices=DeliveryState.choices)
    error_code = models.CharField(max_length=32, blank=True)
    error_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text=_("When a worker began sending it."))
    created_at = models.DateTimeField(auto_now_add=True)
    provider_timestamp = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "provider_id"],
                condition=~Q(provider_id=""),
                name="message_unique_provider_id",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=~Q(client_id=""),
                name="message_unique_client_id",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_timeline"),
            models.Index(fields=["state", "created_at"], name="message_by_state"),
            # A send waits for its conversation's earlier ones still leaving (services.messages.
            # _earlier_still_leaving): those few rows, not the conversation's whole timeline.
            models.Index(
                fields=["conversation", "id"],
                condition=Q(direction="out", state__in=["queued", "sending"]),
                name="message_leaving",
            ),
            # The inbox's search over message text ('simple': customers write in many languages).
            GinIndex(SearchVector("text", config="simple"), name="message_text_search"),
        ]
        ordering = ["created_at", "id"]
        verbose_name = _("message")
        verbose_name_plural = _("messages")

    def __str__(self) -> str:
        return f"{self.direction} {self.kind} #{self.pk}"

    @property
    def is_note(self) -> bool:
        return self.kind == self.Kind.NOTE


def attachment_path(instance, filename: str) -> str:
    return f"attachments/{instance.workspace_id}/{instance.uuid}/{filename}"


class Attachment(WorkspaceScoped):
    class State(models.TextChoices):
        PENDING = "pending", _("Downloading")
        STORED = "stored", _("Stored")
        TOO_LARGE = "too_large", _("Too large")
        FAILED = "failed", _("Failed")

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_path, max_length=300, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=120, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    # A provider's media id, or a file URL (Messenger's CDN, the custom channel's signed links).
    provider_media_id = models.CharField(max_length=2048, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")

    def __str__(self) -> str:
        return self.filename or str(self.uuid)


class QuickReply(WorkspaceScoped):
    """A canned answer an operator inserts by typing `/shortcut`. Variables such as
    `{{contact.first_name}}` and `{{agent.name}}` are filled in when it is inserted."""

    shortcut = models.SlugField(_("shortcut"), max_length=40, allow_unicode=True)
    text = models.TextField(_("text"))
    team = models.ForeignKey(
        "workspaces.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quick_replies",
        help_text=_("Offered to this team only; empty for everyone."),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "shortcut"], name="quick_reply_unique_shortcut")]
        ordering = ["shortcut"]
        verbose_name = _("quick reply")
        verbose_name_plural = _("quick replies")

    def __str__(self) -> str:
        return f"/{self.shortcut}"


class Notification(WorkspaceScoped):
    """Something an operator must notice: a conversation assigned to them, a mention in a note."""

    class Kind(models.TextChoices):
        ASSIGNED = "assigned", _("Assigned to you")
        MENTION = "mention", _("Mentioned you")
        CSAT_LOW = "csat_low", _("Low satisfaction rating")

    recipient = models.ForeignKey("workspaces.Membership", on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notifications")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey("workspaces.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["recipient", "read_at", "-created_at"], name="notification_inbox")]
        ordering = ["-created_at"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.conversation_id}"
