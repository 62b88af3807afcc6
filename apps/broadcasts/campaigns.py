"""Campaigns: broadcasts made again and again, on a crontab in the workspace's time zone ("we
miss you", weekly promotions) or on a restock (back in stock).

A scheduled campaign owns one django-celery-beat `PeriodicTask` (`broadcasts.run_campaign` with
the campaign's id) whose `CrontabSchedule` carries the workspace's time zone, so "11:00" is
11:00 in Cairo whatever the server's zone; `campaign_schedule_sync` keeps the two in step
whenever the campaign is saved. Each run makes an ordinary `Broadcast` (linked to the campaign)
and starts it: the sender applies the same rules (opt-in, weekly cap, quiet hours, dedupe) as
for a broadcast made by hand.

Back in stock: customers who asked for a missing product carry the tag `waiting:<sku>`. When the
order system reports the SKU in stock again (`contacts.services.stock_event_record` marks the
restock), every enabled back-in-stock campaign of the workspace sends its template to the
contacts with that tag. Once the broadcast is over, the contacts it reached (sent, delivered or
read) lose the tag, so a later restock does not message them again; those it skipped (no
opt-in, quiet hours, weekly cap) or failed keep it and are told next time.
"""

import json
import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.broadcasts.models import Broadcast, Campaign, Recipient
from apps.core.exceptions import DomainError

logger = logging.getLogger(__name__)

RUN_CAMPAIGN_TASK = "broadcasts.run_campaign"
SETTLE_TASK = "broadcasts.back_in_stock_settle"
DEFAULT_INACTIVE_DAYS = 30
DEFAULT_NOT_MESSAGED_DAYS = 14
WAITING_PREFIX = "waiting:"
# Two runs of one campaign closer than this are one run delivered twice (two beats, or a task
# redelivered after its worker died): the second is skipped.
MIN_RUN_GAP = timedelta(seconds=60)
# How often a back-in-stock broadcast is checked for being over, and for how long at most.
SETTLE_EVERY_SECONDS = 5
SETTLE_GIVE_UP_AFTER = timedelta(days=2)
REACHED = (Recipient.State.SENT, Recipient.State.DELIVERED, Recipient.State.READ)
UNFINISHED = (Broadcast.State.DRAFT, Broadcast.State.SCHEDULED, Broadcast.State.RUNNING, Broadcast.State.PAUSED)
# What a back-in-stock campaign's variables may name beyond the contact's fields; replaced by
# constants when the restock's broadcast is made.
PRODUCT_FIELDS = ("product.sku", "product.name")
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
SETTINGS_KEYS = {
    Campaign.Kind.WE_MISS_YOU: ("inactive_days", "not_messaged_days"),
    Campaign.Kind.PROMO: (),
    Campaign.Kind.BACK_IN_STOCK: (),
}


# Checks (the admin's form and the API call them before saving) -----------------------------


def campaign_errors(*, kind: str, segment, settings: dict, crontab: dict) -> dict[str, list[str]]:
    """What is wrong with a campaign's kind, segment, settings and schedule, by field."""
    from django.core.exceptions import ValidationError
    from django_celery_beat import validators

    errors: dict[str, list[str]] = {}
    if kind == Campaign.Kind.PROMO and segment is None:
        errors["segment"] = [_("A promotion goes to a segment: choose one.")]
    if not isinstance(settings, dict):
        errors["settings"] = [_('Settings are a JSON object, e.g. {"inactive_days": 30}.')]
    else:
        allowed = SETTINGS_KEYS.get(kind, ())
        for key, value in settings.items():
            if key not in allowed:
                errors.setdefault("settings", []).append(_("Unknown setting “%(key)s”.") % {"key": key})
            elif not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 3650:
                errors.setdefault("settings", []).append(
                    _("“%(key)s” is a number of days from 1 to 3650.") % {"key": key}
                )
    if kind != Campaign.Kind.BACK_IN_STOCK:
        for field in CRONTAB_FIELDS:
            try:
                getattr(validators, f"{field}_validator")(crontab.get(field) or "")
            except (ValidationError, ValueError, IndexError) as error:
                errors[field] = [_("Not a crontab value: %(error)s") % {"error": error}]
    return errors


def campaign_variables_errors(variables, *, template, kind: str) -> list[str]:
    """What is wrong with a campaign's variables: one per template variable, each a contact's
    field or a constant (back in stock: also the product's name or SKU). A campaign has no CSV."""
    from apps.broadcasts.services import CONTACT_FIELDS, CUSTOM_FIELD

    if not isinstance(variables, list):
        return [_('A JSON list, e.g. [{"field": "contact.first_name"}, {"value": "10%"}].')]
    errors = []
    if len(variables) != template.variable_count:
        labels = ", ".join(variable.label for variable in template.variables) or "—"
        errors.append(
            _("The template has %(count)d variable(s) (%(labels)s); give one entry for each.")
            % {"count": template.variable_count, "labels": labels}
        )
    fields = {*CONTACT_FIELDS, *(PRODUCT_FIELDS if kind == Campaign.Kind.BACK_IN_STOCK else ())}
    for number, variable in enumerate(variables, start=1):
        if not isinstance(variable, dict) or set(variable) not in ({"value"}, {"field"}, {"field", "fallback"}):
            errors.append(_('{{%(n)d}}: give {"field": "contact.first_name"} or {"value": "…"}.') % {"n": number})
        elif "field" in variable and not (
            variable["field"] in fields
            or (str(variable["field"]).startswith(CUSTOM_FIELD) and variable["field"] != CUSTOM_FIELD)
        ):
            errors.append(
                _("{{%(n)d}}: unknown field “%(field)s”; one of %(fields)s or contact.custom.<key>.")
                % {"n": number, "field": variable["field"], "fields": ", ".join(sorted(fields))}
            )
    return errors


# The schedule ---------------------------------------------------------------------------------


def campaign_schedule_sync(*, campaign: Campaign):
    """Creates, updates or removes the campaign's periodic task: a scheduled campaign runs on its
    crontab in the workspace's time zone while it is enabled; a back-in-stock one has no schedule."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    task = PeriodicTask.objects.filter(pk=campaign.periodic_task_id).first() if campaign.periodic_task_id else None
    if campaign.kind == Campaign.Kind.BACK_IN_STOCK:
        if task is not None:
            task.delete()  # the OneToOne is SET_NULL: the campaign's column empties itself
            campaign.periodic_task = None
        return None
    crontab, _created = CrontabSchedule.objects.get_or_create(
        **{field: getattr(campaign, field) for field in CRONTAB_FIELDS}, timezone=campaign.workspace.tz
    )
    task = task or PeriodicTask(task=RUN_CAMPAIGN_TASK)
    task.name = f"Campaign #{campaign.pk}: {campaign.name}"[:200]
    task.task = RUN_CAMPAIGN_TASK
    task.args = json.dumps([campaign.pk])
    task.crontab, task.interval, task.clocked, task.solar = crontab, None, None, None
    task.enabled = campaign.enabled
    task.description = f"{campaign.get_kind_display()} in {campaign.workspace.name}"
    task.save()
    if campaign.periodic_task_id != task.pk:
        campaign.periodic_task = task
        campaign.save(update_fields=["periodic_task"])
    return task


@transaction.atomic
def workspace_campaigns_reschedule(*, workspace_id: int) -> int:
    """After a workspace changes its time zone: its campaigns' crontabs move to the new one."""
    campaigns = Campaign.objects.filter(workspace_id=workspace_id).select_related("workspace")
    return sum(1 for campaign in campaigns if campaign_schedule_sync(campaign=campaign) is not None)


@transaction.atomic
def campaigns_set_enabled(*, campaigns, enabled: bool) -> int:
    count = 0
    for campaign in campaigns.select_related("workspace"):
        if campaign.enabled != enabled:
            campaign.enabled = enabled
            campaign.save(update_fields=["enabled"])
            count += 1
        campaign_schedule_sync(campaign=campaign)
    return count


@transaction.atomic
def campaign_delete(*, campaign: Campaign) -> None:
    """The campaign and its periodic task (beat would otherwise run a campaign that is gone)."""
    from django_celery_beat.models import PeriodicTask

    if campaign.periodic_task_id:
        PeriodicTask.objects.filter(pk=campaign.periodic_task_id).delete()
    campaign.delete()


# Runs -----------------------------------------------------------------------------------------


def campaign_audience_definition(*, campaign: Campaign) -> dict:
    """The conditions a run sends to: the campaign's segment, and for "we miss you" no purchase
    for `inactive_days` (default 30) and no broadcast message for `not_messaged_days` (14)."""
    conditions = [campaign.segment.definition] if campaign.segment_id and campaign.segment.definition else []
    if campaign.kind == Campaign.Kind.WE_MISS_YOU:
        settings = campaign.settings or {}
        inactive = settings.get("inactive_days", DEFAULT_INACTIVE_DAYS)
        quiet = settings.get("not_messaged_days", DEFAULT_NOT_MESSAGED_DAYS)
        conditions += [
            {"field": "last_purchase_at", "op": "older_than_days", "value": inactive},
            {"field": "last_marketing_at", "op": "older_than_days", "value": quiet},
        ]
    return {"match": "all", "conditions": conditions}


def campaign_run(*, campaign_id: int, now: datetime | None = None, created_by=None) -> Broadcast | None:
    """One run of a scheduled campaign: a broadcast to its audience, started at once. Nothing when
    the campaign is gone, disabled, a back-in-stock one, or ran less than a minute ago."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(of=("self",))
            .select_related("workspace", "segment", "channel", "template")
            .filter(pk=campaign_id)
            .first()
        )
        if campaign is None or not campaign.enabled or campaign.kind == Campaign.Kind.BACK_IN_STOCK:
            return None
        if campaign.last_run_at and abs(now - campaign.last_run_at) < MIN_RUN_GAP:
            return None
        local = timezone.localtime(now, campaign.workspace.tz)
        broadcast = _campaign_broadcast(
            campaign=campaign,
            name=f"{campaign.name} · {local:%Y-%m-%d %H:%M}",
            variables=campaign.variables,
            definition=campaign_audience_definition(campaign=campaign),
            created_by=created_by,
        )
        campaign.last_run_at = now
        campaign.save(update_fields=["last_run_at"])
    return broadcast


def _campaign_broadcast(*, campaign, name, variables, definition=None, tag=None, created_by=None) -> Broadcast:
    """A broadcast of the campaign's template to a tag, or to `definition` (the segment's conditions
    with the campaign's own), started now."""
    from apps.broadcasts.services import broadcast_create, broadcast_start

    broadcast = broadcast_create(
        workspace=campaign.workspace,
        name=name[:160],
        channel=campaign.channel,
        template=campaign.template,
        variables=variables,
        audience=Broadcast.Audience.TAG if tag is not None else Broadcast.Audience.SEGMENT,
        segment=campaign.segment if tag is None else None,
        tag=tag,
        created_by=created_by,
        campaign=campaign,
        audience_definition=definition,
    )
    return broadcast_start(broadcast=broadcast)


@shared_task(name=RUN_CAMPAIGN_TASK)
def run_campaign(campaign_id: int) -> int | None:
    """Beat, on the campaign's crontab. A run the rules refuse (its template withdrawn by Meta,
    its channel disabled) is logged; the next one tries again."""
    try:
        broadcast = campaign_run(campaign_id=campaign_id)
    except DomainError as error:
        logger.warning("campaign %s did not run: %s", campaign_id, error.detail)
        return None
    return broadcast.pk if broadcast else None


# Back in stock ------------------------------------------------------------------------------


def waiting_tag_name(sku: str) -> str:
    return f"{WAITING_PREFIX}{sku}"[:80]  # Tag.name's length


def product_name(*, workspace_id: int, sku: str) -> str:
    """What customers call the SKU: its name on the latest order that had it, else the SKU."""
    from apps.contacts.models import Order

    for order in Order.objects.filter(workspace_id=workspace_id, items__contains=[{"sku": sku}]).order_by(
        "-placed_at", "-id"
    )[:1]:
        for item in order.items:
            if item.get("sku") == sku and item.get("name"):
                return str(item["name"])
    return sku


def product_variables(variables: list, *, sku: str, name: str) -> list:
    """A back-in-stock campaign's variables with the product's fields made constants."""
    values = {"product.sku": sku, "product.name": name}
    return [
        {"value": values[v["field"]]} if isinstance(v, dict) and v.get("field") in values else v
        for v in variables or []
    ]


def back_in_stock_on_restock(*, stock_event) -> list[Broadcast]:
    """A SKU is back: each enabled back-in-stock campaign of the workspace messages the contacts
    tagged `waiting:<sku>`. Called after the stock event is committed; a campaign that cannot
    send (its template withdrawn, say) is logged and the others still go."""
    if not stock_event.restocked:
        return []
    campaigns = list(
        Campaign.objects.filter(
            workspace_id=stock_event.workspace_id, kind=Campaign.Kind.BACK_IN_STOCK, enabled=True
        ).select_related("workspace", "channel", "template", "segment")
    )
    if not campaigns:
        return []
    tag = _waiting_tag(workspace_id=stock_event.workspace_id, sku=stock_event.sku)
    back_in_stock_settle_tag(tag=tag)  # who an earlier restock reached is not told again
    if not tag.contacts.exists():
        return []
    name = product_name(workspace_id=stock_event.workspace_id, sku=stock_event.sku)
    started = []
    for campaign in campaigns:
        try:
            broadcast = _restock_broadcast(campaign=campaign, tag=tag, sku=stock_event.sku, name=name)
        except DomainError as error:
            logger.warning("back in stock: campaign %s cannot send for %s: %s", campaign.pk, stock_event.sku, error)
            continue
        if broadcast is not None:
            started.append(broadcast)
    return started


def _waiting_tag(*, workspace_id: int, sku: str):
    from apps.contacts.models import Tag

    tag, _created = Tag.objects.get_or_create(workspace_id=workspace_id, name=waiting_tag_name(sku))
    return tag


@transaction.atomic
def _restock_broadcast(*, campaign: Campaign, tag, sku: str, name: str) -> Broadcast | None:
    # The campaign's row lock orders two restocks of one SKU reported at once: the second sees
    # the first's broadcast still going and leaves its contacts to it.
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
    if Broadcast.objects.filter(campaign=campaign, tag=tag, state__in=UNFINISHED).exists():
        return None
    broadcast = _campaign_broadcast(
        campaign=campaign,
        name=f"{campaign.name} · {name}",
        variables=product_variables(campaign.variables, sku=sku, name=name),
        tag=tag,
    )
    Campaign.objects.filter(pk=campaign.pk).update(last_run_at=timezone.now())
    transaction.on_commit(
        lambda: back_in_stock_settle_later.apply_async((broadcast.pk,), countdown=SETTLE_EVERY_SECONDS)
    )
    return broadcast


def back_in_stock_settle(*, broadcast_id: int) -> bool | None:
    """Once a back-in-stock broadcast is over, the contacts it reached lose `waiting:<sku>`.
    True when settled, False when it is still going (ask again later), None when it is gone."""
    broadcast = Broadcast.objects.filter(pk=broadcast_id, tag__isnull=False).select_related("tag").first()
    if broadcast is None:
        return None
    if broadcast.state in UNFINISHED:
        return False
    _untag_reached(tag=broadcast.tag, broadcasts=[broadcast.pk])
    return True


def back_in_stock_settle_tag(*, tag) -> int:
    """Every finished back-in-stock broadcast to this tag: the contacts it reached lose the tag."""
    finished = Broadcast.objects.filter(
        tag=tag,
        campaign__kind=Campaign.Kind.BACK_IN_STOCK,
        state__in=(Broadcast.State.COMPLETED, Broadcast.State.CANCELLED),
    ).values_list("pk", flat=True)
    return _untag_reached(tag=tag, broadcasts=list(finished))


def _untag_reached(*, tag, broadcasts: list[int]) -> int:
    """One DELETE on the tags' join table (no contact.updated webhook per contact: an audience
    may be thousands, and the tag was only the waiting list's marker)."""
    from apps.contacts.models import Contact

    if not broadcasts:
        return 0
    reached = Recipient.objects.filter(broadcast_id__in=broadcasts, state__in=REACHED).values("contact_id")
    deleted, _rows = Contact.tags.through.objects.filter(tag=tag, contact_id__in=reached).delete()
    return deleted


@shared_task(name=SETTLE_TASK)
def back_in_stock_settle_later(broadcast_id: int) -> None:
    """Asks again every few seconds until the broadcast is over (two days at most)."""
    settled = back_in_stock_settle(broadcast_id=broadcast_id)
    if settled is False:
        created = Broadcast.objects.filter(pk=broadcast_id).values_list("created_at", flat=True).first()
        if created and timezone.now() - created < SETTLE_GIVE_UP_AFTER:
            back_in_stock_settle_later.apply_async((broadcast_id,), countdown=SETTLE_EVERY_SECONDS)
