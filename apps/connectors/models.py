import re
import secrets
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedJSONBField, EncryptedJSONField, EncryptedTextField
from apps.core.netguard import validate_outbound_url
from apps.workspaces.models import WorkspaceScoped


class ChannelKind(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    WEBCHAT = "webchat", _("Web chat")
    MESSENGER = "messenger", "Messenger"
    INSTAGRAM = "instagram", "Instagram"
    TELEGRAM = "telegram", "Telegram"
    WECHAT = "wechat", "WeChat"
    EMAIL = "email", _("Email")
    CUSTOM = "custom", _("Custom (your app)")
    SANDBOX = "sandbox", _("Try-it sandbox: nothing leaves Parley")


def _verify_token() -> str:
    return secrets.token_urlsafe(24)


class Channel(WorkspaceScoped):
    """One number, page, bot, account or widget a workspace talks through.

    `credentials` (access tokens, app secrets) are encrypted at rest; `settings` holds what is
    not secret, including `base_url`, the provider API's address: the real one in production,
    the channel simulator in tests and the demo.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(_("kind"), max_length=16, choices=ChannelKind.choices)
    name = models.CharField(_("name"), max_length=120)
    credentials = EncryptedJSONField(_("credentials"), default=dict, blank=True)
    verify_token = models.CharField(_("webhook verify token"), max_length=64, default=_verify_token)
    settings = models.JSONField(_("settings"), default=dict, blank=True)
    rate_limit_per_second = models.PositiveIntegerField(
        _("messages per second"),
        default=80,
        help_text=_("The provider's throughput for this channel."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def webhook_url(self) -> str:
        return f"{settings.PUBLIC_URL.rstrip('/')}/webhooks/{self.uuid}/"

    @property
    def widget_url(self) -> str:
        return f"{settings.PUBLIC_URL.rstrip('/')}/widget/{self.uuid}.js"

    @property
    def embed_code(self) -> str:
        """The one tag a shop adds to its pages (web chat)."""
        return f'<script src="{self.widget_url}" async></script>'


# `{{1}}` (positional) or `{{first_name}}` (named), as WhatsApp writes a template's variables.
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
NAMED_VARIABLE = re.compile(r"^[a-z][a-z0-9_]*$")
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]+$")
BUTTON_TYPES = ("quick_reply", "url", "phone_number", "copy_code", "otp")
# Meta's limits for a template's parts (WhatsApp Business Management API, message templates).
HEADER_MAX, BODY_MAX, FOOTER_MAX, BUTTON_TEXT_MAX, BUTTONS_MAX = 60, 1024, 60, 25, 10


@dataclass(frozen=True)
class TemplateVariable:
    """One value a send gives. `slot` is its key in a dict of parameters: a named variable's
    name, "header.1" / "body.2" for positional ones, "button.0" for the first button's (a URL's
    `{{1}}` suffix or a coupon code); `name` is what stands between the braces."""

    slot: str
    component: str  # header | body | button
    name: str
    button: int | None = None

    @property
    def label(self) -> str:
        where = f"button {self.button + 1}" if self.button is not None else self.component
        return f"{where} {{{{{self.name}}}}}"


def _button_variable(button: dict) -> str | None:
    """What a button needs per message: a URL's trailing variable, a coupon code."""
    if button.get("type") == "url":
        found = VARIABLE.findall(button.get("url") or "")
        return found[0] if found else None
    if button.get("type") == "copy_code":
        return "coupon_code"
    return None


class MessageTemplate(WorkspaceScoped):
    """A provider-approved message template (WhatsApp's): the only thing a business may send
    outside the customer-service window. Synced from the provider (`templates_sync`), or a local
    draft a supervisor writes before submitting it to Meta.

    A header (text with at most one variable, or a media header whose file is `header`), a
    body, a footer and buttons; variables are positional (`{{1}}`, `{{2}}`) or named
    (`{{first_name}}`) as `parameter_format` says. A send gives one value per `variables` entry,
    as a list in that order or a dict by slot; `example` holds a value for each, in that order."""

    class Category(models.TextChoices):
        MARKETING = "marketing", _("Marketing")
        UTILITY = "utility", _("Utility")
        AUTHENTICATION = "authentication", _("Authentication")

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft (not submitted)")
        APPROVED = "approved", _("Approved")
        PENDING = "pending", _("Pending review")
        REJECTED = "rejected", _("Rejected")
        PAUSED = "paused", _("Paused")

    class Quality(models.TextChoices):
        UNKNOWN = "unknown", _("Not rated yet")
        GREEN = "green", _("High")
        YELLOW = "yellow", _("Medium")
        RED = "red", _("Low")
        FLAGGED = "flagged", _("Flagged: at risk of being disabled")

    class ParameterFormat(models.TextChoices):
        POSITIONAL = "positional", _("Positional: {{1}}, {{2}}")
        NAMED = "named", _("Named: {{first_name}}")

    class HeaderFormat(models.TextChoices):
        NONE = "", _("No header")
        TEXT = "text", _("Text")
        IMAGE = "image", _("Image")
        VIDEO = "video", _("Video")
        DOCUMENT = "document", _("Document")

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="templates")
    name = models.SlugField(_("name"), max_length=512, help_text=_("The name the provider knows it by."))
    language = models.CharField(_("language"), max_length=15, default="en", help_text=_("e.g. en, en_US, ru, ar"))
    category = models.CharField(_("category"), max_length=16, choices=Category.choices, default=Category.UTILITY)
    parameter_format = models.CharField(
        _("variables"), max_length=10, choices=ParameterFormat.choices, default=ParameterFormat.POSITIONAL
    )
    header_format = models.CharField(_("header"), max_length=8, choices=HeaderFormat.choices, blank=True, default="")
    header = models.CharField(
        _("header text or file"),
        max_length=2000,  # a media header's URL (Meta's signed sample links run long)
        blank=True,
        help_text=_("A text header (up to 60 characters, at most one variable), or a media header's file URL."),
    )
    body = models.TextField(_("body"), help_text=_("With variables: Hi {{1}}, your order {{2}} has shipped."))
    footer = models.CharField(_("footer"), max_length=60, blank=True)
    buttons = models.JSONField(
        _("buttons"),
        default=list,
        blank=True,
        help_text=_(
            '[{"type": "quick_reply", "text": "Stop promotions"}, {"type": "url", "text": "Track", '
            '"url": "https://shop.example/t/{{1}}"}, {"type": "phone_number", "text": "Call us", '
            '"phone_number": "+201001234567"}]'
        ),
    )
    example = models.JSONField(
        _("example values"),
        default=list,
        blank=True,
        help_text=_('One per variable, header first, then body, then buttons: ["Amira", "#1001"]'),
    )
    # Rows made in code (the demo, the API) are approved templates; the admin saves new ones as drafts.
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.APPROVED)
    rejected_reason = models.CharField(
        _("why it cannot be sent"), max_length=300, blank=True, help_text=_("The provider's reason, or ours.")
    )
    quality = models.CharField(
        _("quality"), max_length=8, choices=Quality.choices, blank=True, help_text=_("The provider's rating.")
    )
    provider_id = models.CharField(_("provider's id"), max_length=64, blank=True)
    synced_at = models.DateTimeField(_("last synced"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "name", "language"], name="template_unique_per_language")
        ]
        ordering = ["name", "language"]
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"

    # Variables ---------------------------------------------------------------------------------

    @property
    def named(self) -> bool:
        return self.parameter_format == self.ParameterFormat.NAMED

    @property
    def header_text(self) -> str:
        return self.header if self.header_format == self.HeaderFormat.TEXT else ""

    def names_in(self, text: str) -> list[str]:
        """The variables a text uses, once each: named ones in order of appearance, positional
        ones as 1..n up to the highest number (a gap still needs its value, as at Meta)."""
        found = VARIABLE.findall(text or "")
        if self.named:
            return list(dict.fromkeys(found))
        highest = max((int(name) for name in found if name.isdigit()), default=0)
        return [str(number) for number in range(1, highest + 1)]

    def slot_of(self, component: str, name: str) -> str:
        # A named variable is one value wherever it appears (header and body alike).
        return name if self.named else f"{component}.{name}"

    @property
    def variables(self) -> list[TemplateVariable]:
        """Every value a send needs, in the order a list of parameters gives them: the
        header's, the body's, then the buttons'."""
        found: dict[str, TemplateVariable] = {}
        for component, text in (("header", self.header_text), ("body", self.body)):
            for name in self.names_in(text):
                slot = self.slot_of(component, name)
                found.setdefault(slot, TemplateVariable(slot, component, name))
        for index, button in enumerate(self.buttons or []):
            name = _button_variable(button) if isinstance(button, dict) else None
            if name:
                found[f"button.{index}"] = TemplateVariable(f"button.{index}", "button", name, index)
        return list(found.values())

    @property
    def variable_count(self) -> int:
        return len(self.variables)

    def values(self, parameters) -> dict[str, str]:
        """Parameters by slot: from a list in the order of `variables`, or a dict by slot."""
        variables = self.variables
        if isinstance(parameters, dict):
            return {v.slot: str(parameters[v.slot]) for v in variables if parameters.get(v.slot) is not None}
        return {v.slot: str(value) for v, value in zip(variables, parameters or [], strict=False)}

    def examples_in_order(self, examples: dict) -> list[str]:
        """`example` from the provider's samples: {"header": {name: value}, "body": {name: value},
        "buttons": {index: value}}."""
        ordered = []
        for variable in self.variables:
            if variable.button is not None:
                value = (examples.get("buttons") or {}).get(variable.button, "")
            elif self.named:
                value = (examples.get("header") or {}).get(variable.name) or (examples.get("body") or {}).get(
                    variable.name, ""
                )
            else:
                value = (examples.get(variable.component) or {}).get(variable.name, "")
            ordered.append(str(value))
        return ordered

    # What the customer reads -------------------------------------------------------------------

    def fill(self, text: str, component: str, values: dict[str, str]) -> str:
        return VARIABLE.sub(lambda m: values.get(self.slot_of(component, m.group(1)), m.group(0)), text or "")

    def rendered(self, parameters=None) -> dict:
        """Header, body, footer and buttons with the values in (the examples when None); a
        variable without a value stays as `{{n}}`."""
        values = self.values(self.example if parameters is None else parameters)
        media = self.header if self.header_format and self.header_format != self.HeaderFormat.TEXT else ""
        return {
            "header": self.fill(self.header_text, "header", values),
            "header_format": self.header_format,
            "header_media": media,
            "body": self.fill(self.body, "body", values),
            "footer": self.footer,
            "buttons": [self._rendered_button(i, b, values) for i, b in enumerate(self.buttons or [])],
        }

    def _rendered_button(self, index: int, button: dict, values: dict[str, str]) -> dict:
        value = values.get(f"button.{index}", "")
        shown = {"type": button.get("type", ""), "text": button.get("text", "")}
        if button.get("type") == "url":
            shown["url"] = VARIABLE.sub(lambda m: value or m.group(0), button.get("url", ""))
        elif button.get("type") == "phone_number":
            shown["phone_number"] = button.get("phone_number", "")
        elif button.get("type") == "copy_code":
            shown["code"] = value
        return shown

    def render(self, parameters) -> str:
        """The text the customer reads (header, body and footer), as the inbox shows it."""
        shown = self.rendered(parameters or [])
        return "\n\n".join(part for part in (shown["header"], shown["body"], shown["footer"]) if part)

    # Validation (a draft written in the admin) -------------------------------------------------

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.name and not TEMPLATE_NAME.match(self.name):
            errors["name"] = [_("Lower-case letters, digits and underscores only, as WhatsApp requires.")]
        for field, problems in (
            ("header", self._header_errors()),
            ("body", self._text_errors(self.body, BODY_MAX)),
            ("footer", [_("A footer has no variables.")] if VARIABLE.search(self.footer or "") else []),
            ("buttons", self._button_errors()),
        ):
            if problems:
                errors[field] = problems
        if not errors:
            errors = self._example_errors()
        if errors:
            raise ValidationError(errors)

    def _text_errors(self, text: str, limit: int) -> list[str]:
        problems = [_("At most %(n)d characters.") % {"n": limit}] if len(text or "") > limit else []
        found = VARIABLE.findall(text or "")
        if self.named and any(not NAMED_VARIABLE.match(name) for name in found):
            problems.append(_("Named variables are lower-case words: {{first_name}}, not {{1}}."))
        if not self.named and any(not name.isdigit() for name in found):
            problems.append(_("Positional variables are numbers: {{1}}, {{2}}. Or choose named variables."))
        return problems

    def _header_errors(self) -> list[str]:
        if self.header_format == self.HeaderFormat.TEXT:
            problems = self._text_errors(self.header, HEADER_MAX)
            if len(set(VARIABLE.findall(self.header or ""))) > 1:
                problems.append(_("A header has at most one variable."))
            return problems
        if self.header_format and not (self.header or "").startswith("https://"):
            return [_("A media header needs the https:// URL of its file.")]
        return []

    def _button_errors(self) -> list[str]:
        buttons = self.buttons or []
        if not isinstance(buttons, list) or len(buttons) > BUTTONS_MAX:
            return [_("A list of at most %(n)d buttons.") % {"n": BUTTONS_MAX}]
        problems = []
        for index, button in enumerate(buttons, start=1):
            kind = button.get("type") if isinstance(button, dict) else None
            if kind not in BUTTON_TYPES:
                problems.append(_("Button %(i)d: type is one of %(types)s.") % {"i": index, "types": BUTTON_TYPES})
            elif not (button.get("text") or "").strip() or len(button["text"]) > BUTTON_TEXT_MAX:
                problems.append(
                    _("Button %(i)d: a text of 1 to %(n)d characters.") % {"i": index, "n": BUTTON_TEXT_MAX}
                )
            elif kind == "url" and not str(button.get("url", "")).startswith("https://"):
                problems.append(_("Button %(i)d: an https:// url, with {{1}} at its end if it varies.") % {"i": index})
            elif kind == "phone_number" and not str(button.get("phone_number", "")).startswith("+"):
                problems.append(_("Button %(i)d: a phone_number like +201001234567.") % {"i": index})
        return problems

    def _example_errors(self) -> dict[str, list[str]]:
        variables = self.variables
        example = self.example if isinstance(self.example, list) else None
        if example is not None and len(example) == len(variables) and all(str(v).strip() for v in example):
            return {}
        labels = ", ".join(v.label for v in variables) or _("none")
        return {"example": [_("Give one example value per variable, in this order: %(labels)s.") % {"labels": labels}]}


WEBHOOK_EVENTS = (
    "message.created",
    "message.status",
    "conversation.opened",
    "conversation.assigned",
    "conversation.closed",
    "contact.created",
    "contact.updated",
    "csat.submitted",
    "order.updated",
)


def _webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


class WebhookSubscription(WorkspaceScoped):
    """An outside system (the order system, a CRM) told of what happens in Parley: signed POSTs
    to its URL for the events it chose."""

    url = models.URLField(_("URL"), max_length=500, validators=[validate_outbound_url])
    events = ArrayField(
        models.CharField(max_length=40, choices=[(e, e) for e in WEBHOOK_EVENTS]), verbose_name=_("events")
    )
    secret = EncryptedTextField(_("signing secret"), default=_webhook_secret)
    description = models.CharField(_("description"), max_length=200, blank=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.TextField(_("why it was disabled"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "enabled"], name="webhook_by_workspace")]
        ordering = ["-created_at"]
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(WorkspaceScoped):
    """One event for one subscription: retried with backoff for up to 24 hours, every attempt's
    answer kept, replayable from the admin."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Gave up")

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=40)
    # The event's data names customers (contact.*, message.*): encrypted like their contact rows.
    payload = EncryptedJSONBField()
    # Whom the event is about, in clear (ids are not personal): an erasure finds the deliveries
    # about a person by these, as the encrypted payload cannot be searched.
    contact_id = models.BigIntegerField(null=True, blank=True, editable=False)
    conversation_id = models.BigIntegerField(null=True, blank=True, editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due")]
        ordering = ["-created_at"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.state})"

    @staticmethod
    def subjects(event: str, data: dict) -> dict:
        """The contact and conversation ids an event's data names, for the columns above."""
        contact = data.get("contact") if isinstance(data.get("contact"), dict) else {}
        contact_id = data.get("id") if event.startswith("contact.") else data.get("contact_id", contact.get("id"))
        conversation_id = data.get("id") if event.startswith("conversation.") else data.get("conversation_id")
        return {
            "contact_id": contact_id if isinstance(contact_id, int) else None,
            "conversation_id": conversation_id if isinstance(conversation_id, int) else None,
        }
