"""Writes for message templates beyond the sync (apps/connectors/services.py): drafts written in the
API, submitted to the provider for review, deleted there, and the provider's word on them (its
status and quality webhooks) applied.

A draft's life: written (admin or API) → submitted (`template_submit`: Meta answers PENDING and
its id) → approved or rejected by Meta's review (the message_template_status_update webhook,
`template_status_apply`) → perhaps paused or disabled later for low quality, which pauses the
running broadcasts that use it. A template the provider has is never edited here: a copy becomes
a new draft (`template_draft_copy`), submitted under a new name."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from apps.connectors.base import NO_ANSWER, ErrorClass, ProviderError, TemplateStatusUpdate
from apps.connectors.models import MessageTemplate
from apps.connectors.registry import connector_for
from apps.core.exceptions import Conflict, DomainError

Status = MessageTemplate.Status
DRAFT_FIELDS = (
    "name",
    "language",
    "category",
    "parameter_format",
    "header_format",
    "header",
    "body",
    "footer",
    "buttons",
    "example",
)
SUBMIT_LOCK_SECONDS = 60  # longer than a Graph call may take (HTTP_TIMEOUT)


class ProviderUnavailable(DomainError):
    """The provider did not answer, or not usefully: nothing was decided, try again later."""

    code = "provider_unavailable"
    status = 503


# Drafts --------------------------------------------------------------------------------------------


def template_draft_create(*, channel, fields: dict) -> MessageTemplate:
    """A new draft of `channel` (a channel whose provider has templates), checked as a whole: the
    name, each part's limits and variables, one example per variable."""
    if not connector_for(channel).templates:
        raise DomainError(f"{channel.get_kind_display()} channels have no message templates.", code="no_templates")
    template = MessageTemplate(
        workspace_id=channel.workspace_id, channel=channel, status=Status.DRAFT, **_draft_values(fields)
    )
    _checked(template)
    template.save()
    return template


def template_draft_update(*, template: MessageTemplate, fields: dict) -> MessageTemplate:
    """Changes a draft; a template the provider has is copied to a new draft instead."""
    _require_draft(template, "changed")
    values = _draft_values(fields)
    for name, value in values.items():
        setattr(template, name, value)
    _checked(template)
    template.save(update_fields=list(values))
    return template


def _draft_values(fields: dict) -> dict:
    values = {name: fields[name] for name in DRAFT_FIELDS if name in fields}
    for name in ("buttons", "example"):
        if name in values and values[name] is None:
            values[name] = []
    return values


def _checked(template: MessageTemplate) -> None:
    """The model's own rules (MessageTemplate.clean, its fields, one name per channel and
    language) as a DomainError naming each field."""
    try:
        template.full_clean(exclude=["workspace"])
    except ValidationError as error:
        fields = {("non_field_errors" if k == "__all__" else k): v for k, v in error.message_dict.items()}
        raise DomainError("Please check the template.", code="invalid_template", fields=fields) from None


def _require_draft(template: MessageTemplate, verb: str) -> None:
    if template.status != Status.DRAFT:
        raise Conflict(
            f"The template {template.name} is {template.get_status_display().lower()}: only a draft can be {verb}. "
            "Copy it to a new draft to change it.",
            code="template_not_draft",
        )


# Submitting and deleting at the provider -----------------------------------------------------------


def template_submit(*, template: MessageTemplate) -> MessageTemplate:
    """Sends a draft to the provider for review (outside any transaction: a Graph call). The
    template then has the provider's id and status (pending; the webhook brings the verdict) and
    category (Meta may re-categorise). A refusal names the problem in the provider's words (a
    name already taken is a `name` field error); the draft stays a draft to fix and submit again."""
    from apps.core.redis import get_redis, key

    _require_draft(template, "submitted")
    _checked(template)
    connector = connector_for(template.channel)
    if not callable(getattr(connector, "template_submit", None)):
        raise DomainError(
            f"{template.channel.get_kind_display()} templates cannot be submitted from Parley.", code="no_templates"
        )
    lock = get_redis().lock(key("template-submit", template.pk), timeout=SUBMIT_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        raise Conflict(f"The template {template.name} is being submitted right now.", code="template_submitting")
    try:
        answer = connector.template_submit(template.channel, template)
    except ProviderError as error:
        raise _provider_trouble(error, "submit the template") from error
    finally:
        lock.release()
    fields = {**answer, "rejected_reason": "", "synced_at": timezone.now()}
    if not MessageTemplate.objects.filter(pk=template.pk, status=Status.DRAFT).update(**fields):
        # The provider's verdict arrived first and matched the row by name: keep it, add the id.
        MessageTemplate.objects.filter(pk=template.pk, provider_id="").update(provider_id=answer["provider_id"])
    template.refresh_from_db()
    return template


def template_delete(*, template: MessageTemplate) -> bool:
    """Deletes a template here and, unless it is a draft or already gone, at the provider (this
    language only). One still used by a broadcast that may send or an enabled campaign is kept;
    one that finished broadcasts point at stays, paused, for their history. True when the row
    itself went."""
    _refuse_when_in_use(template)
    at_provider = template.status != Status.DRAFT and not (
        template.status == Status.PAUSED and not template.provider_id
    )
    if at_provider:
        if not template.provider_id:
            raise Conflict(
                f"Parley does not know {template.name}'s id at the provider: sync the channel's templates first "
                "(deleting by name alone would delete every language).",
                code="template_id_unknown",
            )
        try:
            connector_for(template.channel).template_delete(template.channel, template)
        except ProviderError as error:
            raise _provider_trouble(error, "delete the template") from error
    try:
        with transaction.atomic():
            template.delete()
        return True
    except ProtectedError:
        reason = f"Deleted at the provider on {timezone.now():%Y-%m-%d}; kept for the broadcasts that used it."
        MessageTemplate.objects.filter(pk=template.pk).update(
            status=Status.PAUSED, provider_id="", rejected_reason=reason
        )
        return False


def _refuse_when_in_use(template: MessageTemplate) -> None:
    from apps.broadcasts.models import Broadcast, Campaign

    unfinished = (Broadcast.State.DRAFT, Broadcast.State.SCHEDULED, Broadcast.State.RUNNING, Broadcast.State.PAUSED)
    users = [
        *Broadcast.objects.filter(template=template, state__in=unfinished).values_list("name", flat=True)[:5],
        *Campaign.objects.filter(template=template, enabled=True).values_list("name", flat=True)[:5],
    ]
    if users:
        raise Conflict(
            f"The template {template.name} is used by {', '.join(users)}: finish or cancel those broadcasts and "
            "disable those campaigns first.",
            code="template_in_use",
        )


def _provider_trouble(error: ProviderError, doing: str) -> DomainError:
    if error.error_class == ErrorClass.CREDENTIALS:
        return Conflict(
            f"The provider refused the channel's credentials ({error.code}: {error.detail}): fix them and try again.",
            code="credentials",
        )
    if error.code == NO_ANSWER:
        return ProviderUnavailable(
            f"The provider did not answer in time: it may have taken the request. Sync the channel's templates to "
            f"see, before you {doing} again."
        )
    if error.error_class == ErrorClass.RETRY:
        return ProviderUnavailable(f"The provider is not answering right now ({error.detail}): try again in a minute.")
    return DomainError(f"The provider refused: {error.detail} ({error.code})", code="provider_refused")


# The provider's word on a template ------------------------------------------------------------------


def template_status_apply(*, channel, update: TemplateStatusUpdate) -> list[int]:
    """Applies a status or quality webhook to the workspace's templates it names (by the
    provider's id on any of the workspace's channels of that kind, else by name and language on
    this channel, drafts never); idempotent, and an event older than what Parley last heard of the
    template changes nothing. A template that stops being sendable pauses the running broadcasts
    using it, with the reason. Returns the ids of the templates changed."""
    changed: list[int] = []
    with transaction.atomic():
        for template in _templates_named(channel, update).select_for_update().order_by("pk"):
            before = template.status
            if not _apply(template, update):
                continue
            changed.append(template.pk)
            if before == Status.APPROVED and template.status != Status.APPROVED:
                _broadcasts_pause(template)
    return changed


def _templates_named(channel, update: TemplateStatusUpdate):
    mine = MessageTemplate.objects.filter(workspace_id=channel.workspace_id, channel__kind=channel.kind)
    if update.template_id and mine.filter(provider_id=update.template_id).exists():
        return mine.filter(provider_id=update.template_id)
    return mine.filter(channel_id=channel.pk, name=update.name, language=update.language, provider_id="").exclude(
        status=Status.DRAFT
    )


def _apply(template: MessageTemplate, update: TemplateStatusUpdate) -> bool:
    """The update's changes saved on `template` (locked by the caller); False when it has none."""
    heard = template.synced_at
    if heard is not None and int(update.timestamp.timestamp()) < int(heard.timestamp()):
        return False  # overtaken: a sync or a later webhook already told us more recent news
    fields = {}
    if update.status:
        fields["status"] = update.status
        fields["rejected_reason"] = "" if update.status in (Status.APPROVED, Status.PENDING) else update.reason
    if update.quality:
        fields["quality"] = update.quality
    if update.flagged:
        fields["quality"] = MessageTemplate.Quality.FLAGGED
    elif update.flagged is False and template.quality == MessageTemplate.Quality.FLAGGED:
        fields["quality"] = ""
    if update.template_id and not template.provider_id:
        fields["provider_id"] = update.template_id
    fields = {name: value for name, value in fields.items() if getattr(template, name) != value}
    if not fields:
        return False
    fields["synced_at"] = max(update.timestamp, heard) if heard else update.timestamp
    for name, value in fields.items():
        setattr(template, name, value)
    template.save(update_fields=list(fields))
    return True


def _broadcasts_pause(template: MessageTemplate) -> None:
    from apps.broadcasts.models import Broadcast
    from apps.broadcasts.services import broadcast_pause

    said = f" ({template.rejected_reason})" if template.rejected_reason else ""
    reason = f"paused: the provider made the template {template.name} {template.get_status_display().lower()}{said}"
    for broadcast in Broadcast.objects.filter(template_id=template.pk, state=Broadcast.State.RUNNING):
        try:
            broadcast_pause(broadcast=broadcast, reason=reason)
        except Conflict:
            continue  # finished or paused by someone else meanwhile
