from django import forms
from django.contrib import admin, messages
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from apps.connectors.audit import subscription_audit_repr
from apps.connectors.base import ProviderError
from apps.connectors.models import Channel, ChannelKind, MessageTemplate, WebhookDelivery, WebhookSubscription
from apps.connectors.registry import connectors
from apps.connectors.selectors import (
    contact_field_choices,
    template_default_mapping,
    template_sample_contact,
    template_sample_contacts,
    template_values_for_contact,
)
from apps.connectors.services import (
    channel_activate,
    template_draft_copy,
    templates_sync,
    webhook_replay,
    webhook_subscriptions_changed,
)
from apps.connectors.templates import DRAFT_FIELDS, template_delete, template_submit
from apps.core.admin import WorkspaceScopedAdmin
from apps.core.exceptions import DomainError
from apps.workspaces.admin import AuditedAdmin
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record


class ChannelForm(forms.ModelForm):
    credentials = forms.JSONField(
        required=False,
        help_text=_(
            "Secrets, stored encrypted. WhatsApp: access_token, app_secret, phone_number_id, waba_id. "
            "Messenger / Instagram: page_access_token, app_secret, page_id. Telegram: bot_token. "
            "WeChat: app_id, app_secret, token. Email: smtp_password, imap_password. Custom: secret. "
            "See docs/channels/."
        ),
    )
    settings = forms.JSONField(
        required=False,
        help_text=_(
            "Not secret. Every provider: base_url (its API, or the simulator). Web chat: allowed_origins "
            '(["https://shop.example"]; empty allows any site), title, greeting, color, and prechat '
            '({"enabled": true, "fields": ["name", "email", "phone"], "required": ["email"]}). '
            "Email: address, from_name, smtp_host, smtp_port, smtp_username, smtp_security, and for "
            "polling imap_host, imap_port, imap_username, imap_security, imap_folder. Custom: outbound_url, "
            "allow_private_media_urls (true to fetch the app's files from private addresses)."
        ),
    )

    class Meta:
        model = Channel
        fields = ("workspace", "kind", "name", "enabled", "credentials", "settings", "rate_limit_per_second")


@admin.register(Channel)
class ChannelAdmin(AuditedAdmin, WorkspaceScopedAdmin):
    form = ChannelForm
    list_display = ("name", "kind", "workspace", "enabled", "webhook_url")
    list_filter = ("kind", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("uuid", "webhook_url", "verify_token", "embed_code")
    actions = ["activate", "sync_templates"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self._activate(request, obj)

    @admin.action(description=_("Sync message templates from the provider"))
    def sync_templates(self, request, queryset):
        for channel in _template_channels(queryset):
            _sync_templates(request, channel)
        for channel in queryset.exclude(pk__in=_template_channels(queryset).values("pk")):
            messages.warning(request, _("%(channel)s has no message templates.") % {"channel": channel})

    @admin.action(description=_("Connect the selected channels with their providers again"))
    def activate(self, request, queryset):
        for channel in queryset:
            # Re-registers the webhook at the provider (Telegram's setWebhook): a change of the channel.
            audit_record(action=AuditEntry.Action.CHANGE, obj=channel, details={"reconnected": True}, request=request)
            self._activate(request, channel)

    def _activate(self, request, channel) -> None:
        """Telegram learns the webhook address here; a refusal is shown, the channel kept."""
        try:
            channel_activate(channel=channel)
        except ProviderError as error:
            messages.error(
                request,
                _("%(channel)s was saved, but %(provider)s refused to connect it: %(detail)s (%(code)s)")
                % {
                    "channel": channel.name,
                    "provider": channel.get_kind_display(),
                    "detail": error.detail,
                    "code": error.code,
                },
            )

    @admin.display(description=_("web chat embed code"))
    def embed_code(self, channel):
        if channel.kind != ChannelKind.WEBCHAT or not channel.pk:
            return "-"
        return format_html(
            "<code>{}</code><br>{}",
            channel.embed_code,
            _(
                "For signed-in customers, set window.parleySettings = {customerId, customerHash} before it; "
                "customerHash is the hex HMAC-SHA256 of customerId keyed with the webhook verify token."
            ),
        )


def _sync_templates(request, channel) -> None:
    """One channel's templates from its provider, the outcome (or the refusal) shown."""
    try:
        counts = templates_sync(channel=channel)
    except (DomainError, ProviderError) as error:
        messages.error(
            request,
            _("%(channel)s: %(detail)s (%(code)s)") % {"channel": channel, "detail": error.detail, "code": error.code},
        )
        return
    messages.success(
        request,
        _("%(channel)s: %(created)d new, %(updated)d updated, %(removed)d no longer at the provider (paused).")
        % {"channel": channel, **counts},
    )


def _template_channels(queryset):
    kinds = [kind for kind, connector in connectors().items() if connector.templates]
    return queryset.filter(kind__in=kinds)


class MessageTemplateForm(forms.ModelForm):
    buttons = forms.JSONField(required=False, help_text=MessageTemplate._meta.get_field("buttons").help_text)
    example = forms.JSONField(required=False, help_text=MessageTemplate._meta.get_field("example").help_text)

    class Meta:
        model = MessageTemplate
        fields = ("channel", *DRAFT_FIELDS)

    def clean_buttons(self):
        return self.cleaned_data.get("buttons") or []

    def clean_example(self):
        return self.cleaned_data.get("example") or []


@admin.register(MessageTemplate)
class MessageTemplateAdmin(WorkspaceScopedAdmin):
    """The provider's templates, synced (read-only here: the provider decides them), and local
    drafts a supervisor writes and submits to Meta for review ("Save and submit to Meta", or the
    list's action): pending until Meta's verdict arrives by webhook. Operators may send the
    approved ones once the customer-service window has closed (the inbox offers them); broadcasts
    and campaigns use them. The change page previews a template as the customer will see it.
    Deleting one deletes it at Meta too."""

    form = MessageTemplateForm
    change_form_template = "admin/connectors/messagetemplate/change_form.html"
    list_display = (
        *("name", "language", "channel", "category", "status", "quality", "parameter_format", "synced_at"),
        "workspace",
    )
    list_filter = (
        "status",
        "category",
        ("channel", admin.RelatedOnlyFieldListFilter),
        ("workspace", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("channel", "workspace")
    search_fields = ("name", "body")
    actions = ["sync_channels", "copy_as_draft", "submit_for_review"]
    readonly_fields = (
        "workspace",
        "status",
        "rejected_reason",
        "quality",
        "provider_id",
        "synced_at",
        "variable_list",
        "preview",
    )

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("channel", "name", "language", "category", "parameter_format")}),
            (_("Content"), {"fields": ("header_format", "header", "body", "footer", "buttons", "example")}),
        ]
        if obj is not None:
            fieldsets.insert(0, (_("Preview"), {"fields": ("preview", "variable_list")}))
            fieldsets.append(
                (
                    _("At the provider"),
                    {"fields": ("workspace", "status", "rejected_reason", "quality", "provider_id", "synced_at")},
                )
            )
        return fieldsets

    def has_change_permission(self, request, obj=None):
        # A synced template is the provider's: it is viewed here, and copied to a draft to change.
        if obj is not None and obj.status != MessageTemplate.Status.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "channel":
            field.queryset = _template_channels(field.queryset)
        return field

    def save_model(self, request, obj, form, change):
        obj.workspace_id = obj.channel.workspace_id  # a template lives in its channel's workspace
        if not change:
            obj.status = MessageTemplate.Status.DRAFT
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        if SUBMIT_BUTTON in request.POST:
            return self._submitted(request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if SUBMIT_BUTTON in request.POST:
            return self._submitted(request, obj)
        return super().response_change(request, obj)

    def _submitted(self, request, template):
        """After "Save and submit to Meta": the draft is saved whatever Meta says; its answer is shown."""
        _submit(request, template)
        return redirect("admin:connectors_messagetemplate_change", template.pk)

    def delete_model(self, request, obj):
        """At the provider too; a refusal keeps the template, and says why."""
        if not _delete(request, obj):
            request.template_kept = True

    def delete_queryset(self, request, queryset):
        for template in queryset:
            _delete(request, template)

    def response_delete(self, request, obj_display, obj_id):
        if getattr(request, "template_kept", False):
            return redirect("admin:connectors_messagetemplate_change", obj_id)
        return super().response_delete(request, obj_display, obj_id)

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("sync/", wrap(self.sync_view), name="connectors_messagetemplate_sync"),
            path("<int:object_id>/preview/", wrap(self.preview_view), name="connectors_messagetemplate_preview"),
            *super().get_urls(),
        ]

    # Sync --------------------------------------------------------------------------------------

    def _channels(self, request):
        channels = _template_channels(Channel.objects.select_related("workspace"))
        return channels if request.user.is_superuser else channels.filter(workspace__in=self.administered(request))

    def sync_view(self, request):
        """GET: the channels whose templates can be synced; POST channel=<id>: sync it."""
        if request.method == "POST":
            chosen = str(request.POST.get("channel", ""))
            channel = self._channels(request).filter(pk=chosen).first() if chosen.isdigit() else None
            if channel is None:
                raise Http404
            _sync_templates(request, channel)
            return redirect("admin:connectors_messagetemplate_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": MessageTemplate._meta,
            "title": _("Sync templates from the provider"),
            "channels": self._channels(request),
        }
        return TemplateResponse(request, "admin/connectors/messagetemplate/sync.html", context)

    @admin.action(description=_("Sync the selected templates' channels from the provider"))
    def sync_channels(self, request, queryset):
        for channel in self._channels(request).filter(pk__in=queryset.values("channel_id")):
            _sync_templates(request, channel)

    @admin.action(description=_("Copy as a new draft to edit"))
    def copy_as_draft(self, request, queryset):
        for template in queryset:
            copy = template_draft_copy(template=template)
            messages.success(
                request, _("Draft %(name)s made from %(source)s.") % {"name": copy.name, "source": template.name}
            )

    @admin.action(description=_("Submit the selected drafts to Meta for review"))
    def submit_for_review(self, request, queryset):
        for template in queryset.select_related("channel"):
            _submit(request, template)

    # Preview -----------------------------------------------------------------------------------

    def preview_view(self, request, object_id):
        """The template with its examples and with a sample contact's fields, each variable
        mapped to a field of the contact (or left to its example) by the form on the page."""
        template = self.get_object(request, str(object_id))
        if template is None:
            raise Http404
        contact = template_sample_contact(template=template, contact_id=request.GET.get("contact"))
        choices = contact_field_choices(workspace_id=template.workspace_id)
        mapping = _mapping_from(request.GET, template, choices)
        rows = [(v, mapping[i].get("field", "")) for i, v in enumerate(template.variables)]
        context = {
            **self.admin_site.each_context(request),
            "opts": MessageTemplate._meta,
            "original": template,
            "title": _("Preview %(name)s") % {"name": template},
            "example_preview": template_bubble(template.rendered()),
            "contact": contact,
            "contact_preview": _contact_bubble(template, contact, mapping),
            "contacts": template_sample_contacts(template=template),
            "choices": choices,
            "rows": rows,
        }
        return TemplateResponse(request, "admin/connectors/messagetemplate/preview.html", context)

    @admin.display(description=_("preview"))
    def preview(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        contact = template_sample_contact(template=obj)
        mapping = template_default_mapping(template=obj, workspace_id=obj.workspace_id)
        unmapped = [v.label for v, rule in zip(obj.variables, mapping, strict=True) if not rule]
        note = _("%(variables)s keep their examples here.") % {"variables": ", ".join(unmapped)} if unmapped else ""
        return format_html(
            '<div style="display:flex; gap:24px; flex-wrap:wrap">'
            "<div><h4>{}</h4>{}</div><div><h4>{}</h4>{}</div></div><p>{} <a href='{}'>{}</a></p>",
            _("With the example values"),
            template_bubble(obj.rendered()),
            _("With %(contact)s") % {"contact": contact} if contact else _("With a contact"),
            _contact_bubble(obj, contact, mapping),
            note,
            reverse("admin:connectors_messagetemplate_preview", args=[obj.pk]),
            _("Preview with another contact, or map each variable to a contact's field"),
        )

    @admin.display(description=_("values a send gives"))
    def variable_list(self, obj):
        variables = obj.variables if obj is not None else []
        if not variables:
            return _("None")
        examples = list(obj.example or [])
        rows = [(v.label, examples[i] if i < len(examples) else "") for i, v in enumerate(variables)]
        return format_html("<ol>{}</ol>", format_html_join("", "<li><code>{}</code> e.g. {}</li>", rows))


SUBMIT_BUTTON = "_submit_review"


def _submit(request, template) -> None:
    try:
        template = template_submit(template=template)
    except DomainError as error:
        problems = [f"{field}: {'; '.join(map(str, errors))}" for field, errors in (error.fields or {}).items()]
        messages.error(
            request,
            _("%(name)s was not submitted: %(detail)s%(fields)s")
            % {
                "name": template.name,
                "detail": error.detail,
                "fields": f" ({' / '.join(problems)})" if problems else "",
            },
        )
        return
    messages.success(
        request,
        _(
            "%(name)s was submitted to Meta: %(status)s. Meta's verdict (approved, or rejected with the reason) "
            "will show here when it arrives."
        )
        % {"name": template.name, "status": template.get_status_display().lower()},
    )


def _delete(request, template) -> bool:
    """True when it is gone (or kept, paused, for the broadcasts that used it)."""
    name = str(template)
    try:
        gone = template_delete(template=template)
    except DomainError as error:
        messages.error(request, _("%(name)s was kept: %(detail)s") % {"name": name, "detail": error.detail})
        return False
    if not gone:
        messages.warning(
            request,
            _("%(name)s was deleted at the provider and kept here, paused, for its broadcasts.") % {"name": name},
        )
    return True


def _mapping_from(query, template, choices) -> list[dict]:
    """`v<n>=contact.<field>` per variable from the preview form; the default mapping when the
    form was not sent."""
    allowed = {field for field, _ in choices}
    if not any(key.startswith("v") and key[1:].isdigit() for key in query):
        return template_default_mapping(template=template, workspace_id=template.workspace_id)
    return [
        {"field": query[f"v{i}"]} if query.get(f"v{i}") in allowed else {} for i, _ in enumerate(template.variables)
    ]


def _contact_bubble(template, contact, mapping):
    if contact is None:
        return format_html("<p>{}</p>", _("This workspace has no contacts yet."))
    values = template_values_for_contact(template=template, contact=contact, mapping=mapping)
    return template_bubble(template.rendered(values))


BUTTON_ICONS = {"url": "↗", "phone_number": "☎", "quick_reply": "↩", "copy_code": "⧉", "otp": "⧉"}


def template_bubble(shown: dict):
    """A template as the customer's phone shows it: header, body, footer, then its buttons."""
    header = ""
    if shown["header"]:
        header = format_html("<div style='font-weight:bold; margin-bottom:6px'>{}</div>", shown["header"])
    elif shown["header_media"]:
        header = format_html(
            "<div style='margin-bottom:6px'>[{}] <a href='{}' rel='noopener'>{}</a></div>",
            shown["header_format"],
            shown["header_media"],
            _("file"),
        )
    footer = (
        format_html("<div style='color:#667; font-size:12px; margin-top:6px'>{}</div>", shown["footer"])
        if shown["footer"]
        else ""
    )
    buttons = format_html_join(
        "",
        "<div style='border-top:1px solid #dde; padding:6px; text-align:center; color:#0a7cff'>{} {}{}</div>",
        ((BUTTON_ICONS.get(b["type"], "•"), b["text"], _button_detail(b)) for b in shown["buttons"]),
    )
    return format_html(
        "<div class='template-preview' style='max-width:340px; background:#e7ffdb; border-radius:8px; padding:10px; "
        "white-space:pre-wrap; font-family:system-ui, sans-serif; box-shadow:0 1px 1px #0002'>{}<div>{}</div>{}</div>"
        "<div style='max-width:360px; background:#fff'>{}</div>",
        header,
        shown["body"],
        footer,
        buttons,
    )


def _button_detail(button: dict) -> str:
    detail = button.get("url") or button.get("phone_number") or button.get("code") or ""
    return f" ({detail})" if detail else ""


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(AuditedAdmin, WorkspaceScopedAdmin):
    """Where the workspace's events (customers' messages among them) are sent: who added, changed
    or removed one is in the audit log."""

    list_display = ("url", "workspace", "enabled", "consecutive_failures", "created_at")
    list_filter = ("enabled", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = ("secret", "consecutive_failures", "disabled_reason")

    def audit_repr(self, obj) -> str:
        return subscription_audit_repr(obj)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        webhook_subscriptions_changed(workspace_id=obj.workspace_id)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WorkspaceScopedAdmin):
    """Every event sent to a subscription, with the receiver's last answer; replay from here."""

    list_display = ("event", "subscription", "state", "attempts", "last_status_code", "created_at")
    list_filter = ("state", "event", ("workspace", admin.RelatedOnlyFieldListFilter))
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    @admin.action(description=_("Replay the selected deliveries"))
    def replay(self, request, queryset):
        for delivery in queryset:
            webhook_replay(delivery=delivery)
        messages.success(request, _("Queued to be sent again."))
