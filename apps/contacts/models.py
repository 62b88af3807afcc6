from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.core.crypto import EncryptedTextField
from apps.workspaces.models import WorkspaceScoped


class Tag(WorkspaceScoped):
    name = models.CharField(_("name"), max_length=80)
    color = models.CharField(_("colour"), max_length=7, default="#3451d1")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="tag_unique_name")]
        ordering = ["name"]
        verbose_name = _("tag")
        verbose_name_plural = _("tags")

    def __str__(self) -> str:
        return self.name


class CustomFieldDefinition(WorkspaceScoped):
    class Type(models.TextChoices):
        TEXT = "text", _("Text")
        NUMBER = "number", _("Number")
        DATE = "date", _("Date")
        BOOLEAN = "boolean", _("Yes / no")
        CHOICE = "choice", _("Choice")

    key = models.SlugField(_("key"), max_length=60)
    label = models.CharField(_("label"), max_length=120)
    type = models.CharField(_("type"), max_length=8, choices=Type.choices, default=Type.TEXT)
    choices = models.JSONField(_("choices"), default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="custom_field_unique_key")]
        ordering = ["label"]
        verbose_name = _("custom field")
        verbose_name_plural = _("custom fields")

    def __str__(self) -> str:
        return self.label


class Contact(WorkspaceScoped):
    """A customer (or supplier, courier): one person, however many channels they write on.

    Name, phone and email are encrypted; `phone_index` and `email_index` are their blind
    indexes (apps/core/crypto.py), which is how a returning customer is recognised."""

    class Lifecycle(models.TextChoices):
        LEAD = "lead", _("Lead")
        CUSTOMER = "customer", _("Customer")
        REPEAT = "repeat", _("Repeat customer")
        CHURNED = "churned", _("Churned")

    name = EncryptedTextField(_("name"), blank=True)
    phone = EncryptedTextField(_("phone"), blank=True, help_text=_("E.164, e.g. +201001234567"))
    phone_index = models.CharField(max_length=64, blank=True, editable=False)
    email = EncryptedTextField(_("email"), blank=True)
    email_index = models.CharField(max_length=64, blank=True, editable=False)
    # Blind indexes of the name's word prefixes, so operators can search encrypted names.
    search_tokens = ArrayField(models.CharField(max_length=16), default=list, blank=True, editable=False)
    external_id = models.CharField(_("external id"), max_length=120, blank=True)
    language = models.CharField(_("language"), max_length=8, blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True)
    custom_fields = models.JSONField(_("custom fields"), default=dict, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts", verbose_name=_("tags"))
    lifecycle_stage = models.CharField(
        _("lifecycle stage"), max_length=12, choices=Lifecycle.choices, default=Lifecycle.LEAD
    )
    last_purchase_at = models.DateTimeField(_("last purchase"), null=True, blank=True)
    marketing_consent = models.JSONField(
        _("marketing consent"),
        default=dict,
        blank=True,
        help_text=_('Per channel kind: {"whatsapp": {"opted_in": true, "at": "..."}}'),
    )
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)
    erased_at = models.DateTimeField(
        _("erased"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("When the person's data was erased at their request; the row stays as an anonymous count."),
    )

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "phone_index"], name="contact_by_phone"),
            models.Index(fields=["workspace", "email_index"], name="contact_by_email"),
            GinIndex(fields=["search_tokens"], name="contact_search", fastupdate=False),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "external_id"],
                condition=~Q(external_id=""),
                name="contact_unique_external_id",
            )
        ]
        ordering = ["-created_at"]
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")

    def __str__(self) -> str:
        return self.name or self.phone or self.email or f"Contact {self.pk}"

    @property
    def audit_repr(self) -> str:
        """How the audit and admin logs name a contact: by id, never by their personal data."""
        return f"Contact #{self.pk}"

    @property
    def first_name(self) -> str:
        return (self.name or "").split(" ")[0]


class ContactIdentity(WorkspaceScoped):
    """How a channel knows the person: WhatsApp wa_id, Messenger PSID, Telegram user id, WeChat
    OpenID, an email address, a web visitor id. Unique per channel."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="identities")
    channel = models.ForeignKey("connectors.Channel", on_delete=models.CASCADE, related_name="identities")
    # A wa_id is a phone number, an email identity an address: both stay encrypted, and the
    # blind index is what the unique constraint and lookups use.
    external_id = EncryptedTextField()
    external_id_index = models.CharField(max_length=64, editable=False)
    display_name = EncryptedTextField(blank=True)
    reachable = models.BooleanField(
        default=True, help_text=_("False once the provider says this person cannot be reached.")
    )
    # When the provider last said so (a follow, a block, a refused send): an older word, delivered
    # late or replayed, does not undo a newer one.
    reachability_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "external_id_index"], name="identity_unique_per_channel")
        ]
        verbose_name = _("contact identity")
        verbose_name_plural = _("contact identities")

    def __str__(self) -> str:
        # Not the external id (a phone, an address): this string lands in the admin's change log.
        return f"{self.channel.kind} identity #{self.pk}"


class Order(WorkspaceScoped):
    """A customer's order as the order system tells it (`POST /api/v1/orders/`, upserted by its
    external id): what the inbox's customer panel and the bot's "where is my order" read."""

    class Status(models.TextChoices):
        CREATED = "created", _("Created")
        PAID = "paid", _("Paid")
        SHIPPED = "shipped", _("Shipped")
        DELIVERED = "delivered", _("Delivered")
        CANCELLED = "cancelled", _("Cancelled")
        REFUNDED = "refunded", _("Refunded")

    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders")
    external_id = models.CharField(_("order number"), max_length=120)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.CREATED)
    items = models.JSONField(_("items"), default=list, blank=True, help_text=_("[{sku, name, qty, price}]"))
    total = models.DecimalField(_("total"), max_digits=12, decimal_places=2, default=0)
    currency = models.CharField(_("currency"), max_length=3, default="USD")
    delivery_address = EncryptedTextField(_("delivery address"), blank=True)  # where a person lives
    courier = models.CharField(_("courier"), max_length=120, blank=True)
    tracking_number = models.CharField(_("tracking number"), max_length=120, blank=True)
    tracking_url = models.URLField(_("tracking link"), max_length=500, blank=True)
    history = models.JSONField(default=list, blank=True, editable=False, help_text=_("[{status, at}]"))
    placed_at = models.DateTimeField(_("placed"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "external_id"], name="order_unique_external_id")]
        indexes = [
            models.Index(fields=["contact", "-placed_at"], name="order_by_contact"),
            models.Index(fields=["workspace", "-updated_at"], name="order_recent"),
        ]
        ordering = ["-placed_at", "-id"]
        verbose_name = _("order")
        verbose_name_plural = _("orders")

    def __str__(self) -> str:
        return f"#{self.external_id} ({self.get_status_display()})"


class StockEvent(WorkspaceScoped):
    """What the order system says of a product's stock; a restock (out → in) is what
    back-in-stock campaigns react to."""

    sku = models.CharField(_("SKU"), max_length=120)
    in_stock = models.BooleanField(_("in stock"))
    quantity = models.IntegerField(_("quantity"), null=True, blank=True)
    restocked = models.BooleanField(_("restock"), default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "sku", "-created_at"], name="stock_by_sku")]
        ordering = ["-created_at", "-id"]
        verbose_name = _("stock event")
        verbose_name_plural = _("stock events")

    def __str__(self) -> str:
        return f"{self.sku}: {'in' if self.in_stock else 'out of'} stock"
