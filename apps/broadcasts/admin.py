"""Broadcasts, campaigns and the workspace's rules in the admin.

A supervisor makes a broadcast on the add page (template, its variables, the audience: a segment,
a tag or an uploaded CSV; now, later or kept as a draft, times in the workspace's time zone). The
sender's services check everything: their errors come back as form errors (a CSV's bad rows one
per line). A broadcast's page then has the buttons for what its state allows (schedule, start,
pause, resume, cancel) and links to its live progress page (websocket), its report (funnel,
failures by reason) and the CSV export of its recipients. A campaign's page keeps its beat
schedule in step when it is saved (`campaigns.campaign_schedule_sync`).

Everything is scoped to the workspaces the person administers (apps.core.admin): another
workspace's broadcast is a 404 on every page here."""

import json
from collections.abc import Iterator
from datetime import UTC
from itertools import islice

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from apps.broadcasts import admin_segments  # noqa: F401
from apps.broadcasts.campaigns import (
    CRONTAB_FIELDS,
    campaign_delete,
    campaign_errors,
    campaign_run,
    campaign_schedule_sync,
    campaign_variables_errors,
    campaigns_set_enabled,
)
from apps.broadcasts.models import Broadcast, BroadcastSettings, Campaign
from apps.connectors.models import MessageTemplate
from apps.core.admin import WorkspaceScopedAdmin
from apps.core.exceptions import DomainError

MAX_CSV_BYTES = 10 * 1024 * 1024
EXPORT_CHUNK_ROWS = 1000  # lines per piece of a streamed export: one hop to the database thread each
# What each state lets a supervisor do from the broadcast's page.
VERBS = {
    Broadcast.State.DRAFT: ("schedule", "start", "cancel"),
    Broadcast.State.SCHEDULED: ("schedule", "start", "cancel"),
    Broadcast.State.RUNNING: ("pause", "cancel"),
    Broadcast.State.PAUSED: ("resume", "cancel"),
}
VERB_LABELS = {
    "start": _("Start now"),
    "pause": _("Pause"),
    "resume": _("Resume"),
    "cancel": _("Cancel the broadcast"),
}
VARIABLES_HELP = _(
    'One entry per template variable, in order (header, body, buttons): {"field": "contact.first_name"} (or '
    "contact.name, contact.phone, contact.email, contact.language, contact.country, contact.external_id, "
    'contact.custom.<key>; add "fallback": "there" for contacts without one), {"value": "SPRING10"} for the '
    'same text for everyone, or, with a CSV, {"column": "promo"}. Example: '
    '[{"field": "contact.first_name", "fallback": "there"}, {"value": "10%"}]. See docs/broadcasts.md.'
)


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2)


def json_area(rows: int = 5, **kwargs) -> PrettyJSONField:
    widget = forms.Textarea(attrs={"rows": rows, "cols": 72, "style": "font-family: monospace; font-size: 12px"})
    return PrettyJSONField(widget=widget, **kwargs)


class WallClockField(forms.DateTimeField):
    """A date and time as a clock in the workspace shows it (naive); the form places it in the
    workspace's time zone, whatever zone the page is rendered in."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]

    def to_python(self, value):
        with timezone.override(UTC):  # parsed as is, then stripped of the zone it was given
            moment = super().to_python(value)
        return moment.replace(tzinfo=None) if moment else None

    def prepare_value(self, value):
        return value


def in_workspace_zone(naive, workspace):
    """The moment a workspace's clock shows `naive`. A time that does not exist there (the clocks
    jump forward) is a form error rather than a guess; one that happens twice is the first."""
    moment = timezone.make_aware(naive, workspace.tz)
    if moment.astimezone(UTC).astimezone(workspace.tz).replace(tzinfo=None) != naive:
        raise ValidationError(
            _("%(time)s does not exist in %(zone)s (the clocks change).") % _zone_args(naive, workspace)
        )
    return moment


def _zone_args(naive, workspace) -> dict:
    return {"time": naive.strftime("%Y-%m-%d %H:%M"), "zone": workspace.timezone}


def zones_text(workspaces) -> str:
    """“Nile Basket: Africa/Cairo, now 14:05”, for each workspace the person administers."""
    now = timezone.now()
    return "; ".join(
        f"{workspace.name}: {workspace.timezone}, {_('now')} {timezone.localtime(now, workspace.tz):%Y-%m-%d %H:%M}"
        for workspace in workspaces
    )


def domain_error_to_form(form: forms.Form, error: DomainError, *, renamed: dict | None = None) -> None:
    """A service's error as form errors: each field it names on that field (or the form's top
    when the form has no such field), else its detail at the top."""
    renamed = renamed or {}
    fields = error.fields or {}
    if not fields:
        form.add_error(None, error.detail)
    for name, problems in fields.items():
        name = renamed.get(name, name)
        problems = problems if isinstance(problems, list) else [problems]
        form.add_error(name if name in form.fields else None, [str(problem) for problem in problems])


def _templates_reference(workspaces) -> list[dict]:
    """The approved templates a broadcast may use, with what each variable is, for the add page."""
    templates = (
        MessageTemplate.objects.filter(workspace__in=workspaces, status=MessageTemplate.Status.APPROVED)
        .select_related("channel")
        .order_by("channel__name", "name", "language")
    )
    return [
        {
            "channel": template.channel.name,
            "name": str(template),
            "category": template.get_category_display(),
            "body": template.body,
            "variables": ", ".join(variable.label for variable in template.variables) or "—",
        }
        for template in templates[:200]
    ]


# Broadcasts -----------------------------------------------------------------------------------


class BroadcastCreateForm(forms.ModelForm):
    """The add page. Once everything is filled in, the broadcast is made by the sender's service
    inside a savepoint, so each of its errors lands on the field it names and a refused
    broadcast leaves nothing behind."""

    WHEN_DRAFT, WHEN_NOW, WHEN_AT = "draft", "now", "at"

    variables = json_area(required=False, initial=list, help_text=VARIABLES_HELP)
    csv_upload = forms.FileField(
        label=_("CSV of recipients"),
        required=False,
        help_text=_(
            "With the audience “An uploaded CSV of phones”: a header row with a phone column and one column per "
            '{"column": …} variable, e.g. phone,name,promo. UTF-8, up to 10 MB.'
        ),
    )
    when = forms.ChoiceField(
        label=_("Send"),
        choices=[
            (WHEN_DRAFT, _("Keep as a draft")),
            (WHEN_NOW, _("Now")),
            (WHEN_AT, _("At the time below")),
        ],
        initial=WHEN_DRAFT,
        widget=forms.RadioSelect,
    )
    send_at = WallClockField(label=_("Send at"), required=False)

    class Meta:
        model = Broadcast
        fields = ("workspace", "name", "channel", "template", "variables", "audience", "segment", "tag")
        widgets = {"audience": forms.RadioSelect}

    request = None  # set by BroadcastAdmin.get_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.request is not None:
            from apps.workspaces.selectors import workspaces_administered_by

            zones = zones_text(workspaces_administered_by(self.request.user))
            # The admin prints help text as HTML: the workspaces' names are escaped here.
            self.fields["send_at"].help_text = _("In the workspace's time zone: %(zones)s.") % {"zones": escape(zones)}

    def clean_variables(self):
        return self.cleaned_data.get("variables") or []

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace")
        if cleaned.get("when") == self.WHEN_AT:
            if not cleaned.get("send_at"):
                self.add_error("send_at", _("Give the date and time to send at."))
            elif workspace is not None:
                try:
                    cleaned["scheduled_at"] = in_workspace_zone(cleaned["send_at"], workspace)
                except ValidationError as error:
                    self.add_error("send_at", error)
        upload = cleaned.get("csv_upload")
        if upload:
            cleaned["csv_content"] = self._csv_bytes(upload)
        return cleaned

    def _csv_bytes(self, upload) -> bytes | None:
        if upload.size > MAX_CSV_BYTES:
            self.add_error("csv_upload", _("The file is larger than 10 MB."))
            return None
        return upload.read()  # the sender's service reads it and names each bad row

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        try:
            with transaction.atomic():
                self.instance = self._create()
        except DomainError as error:
            domain_error_to_form(
                self, error, renamed={"csv": "csv_upload", "csv_content": "csv_upload", "scheduled_at": "send_at"}
            )

    def _create(self) -> Broadcast:
        from apps.broadcasts import services

        data = self.cleaned_data
        audience = data["audience"]
        broadcast = services.broadcast_create(
            workspace=data["workspace"],
            name=data["name"],
            channel=data["channel"],
            template=data["template"],
            variables=data["variables"],
            audience=audience,
            segment=data.get("segment") if audience == Broadcast.Audience.SEGMENT else None,
            tag=data.get("tag") if audience == Broadcast.Audience.TAG else None,
            csv_content=data.get("csv_content") if audience == Broadcast.Audience.CSV else None,
            scheduled_at=data["scheduled_at"] if data["when"] == self.WHEN_AT else None,
            created_by=self.request.user if self.request else None,
        )
        if data["when"] == self.WHEN_NOW:
            services.broadcast_start(broadcast=broadcast)
        broadcast.refresh_from_db()
        return broadcast


class BroadcastChangeForm(forms.ModelForm):
    """A made broadcast keeps its template and audience; only its name changes here."""

    class Meta:
        model = Broadcast
        fields = ("name",)


class ScheduleForm(forms.Form):
    send_at = WallClockField(label=_("Send at"))


@admin.register(Broadcast)
class BroadcastAdmin(WorkspaceScopedAdmin):
    list_display = ("name", "state", "template", "audience_shown", "scheduled_shown", "total", "campaign", "links")
    list_filter = (
        "state",
        "audience",
        ("campaign", admin.RelatedOnlyFieldListFilter),
        ("workspace", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("template", "segment", "tag", "campaign", "workspace")
    search_fields = ("name",)
    actions = ["start_selected", "pause_selected", "resume_selected", "cancel_selected"]
    change_form_template = "admin/broadcasts/broadcast/change_form.html"
    shown = (
        "workspace",
        "state",
        "paused_reason",
        "channel",
        "template",
        "variables_shown",
        "audience",
        "segment",
        "tag",
        "csv_file",
        "scheduled_shown",
        "campaign",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "total",
    )

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = BroadcastChangeForm if obj is not None else BroadcastCreateForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [
                (None, {"fields": ("workspace", "name", "channel", "template", "variables")}),
                (_("Audience"), {"fields": ("audience", "segment", "tag", "csv_upload")}),
                (_("When"), {"fields": ("when", "send_at")}),
            ]
        return [(None, {"fields": ("name", *self.shown)})]

    def get_readonly_fields(self, request, obj=None):
        return self.shown if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "template":
            field.queryset = field.queryset.filter(status=MessageTemplate.Status.APPROVED).select_related("channel")
            field.label_from_instance = lambda template: f"{template} · {template.channel.name}"
        return field

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        administered = self.administered(request)
        if "workspace" not in initial and administered.count() == 1:
            initial["workspace"] = administered.get().pk
        return initial

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra = {"zones": zones_text(self.administered(request))}
        if object_id is None:
            extra["templates_reference"] = _templates_reference(self.administered(request))
        else:
            broadcast = self._broadcast(request, object_id)
            extra.update(
                verbs=[(verb, VERB_LABELS.get(verb)) for verb in VERBS.get(broadcast.state, ()) if verb != "schedule"],
                can_schedule="schedule" in VERBS.get(broadcast.state, ()),
                schedule_form=ScheduleForm(initial={"send_at": _wall_clock(broadcast.scheduled_at, broadcast)}),
                workspace_zone=broadcast.workspace.timezone,
            )
        return super().changeform_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def save_model(self, request, obj, form, change):
        if change:
            # Only the name: the sender updates state and counters on the same row meanwhile.
            obj.save(update_fields=["name"])
        # A new broadcast was made by the sender's service when the form was validated.

    def get_deleted_objects(self, objs, request):
        # A broadcast that is sending (or paused mid-way) is cancelled first, never deleted under the sender.
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        busy = [str(o) for o in objs if o.state in (Broadcast.State.RUNNING, Broadcast.State.PAUSED)]
        return (
            deleted,
            counts,
            perms,
            [*protected, *(_("%(name)s is sending: cancel it first.") % {"name": n} for n in busy)],
        )

    # Columns ------------------------------------------------------------------------------------

    @admin.display(description=_("audience"))
    def audience_shown(self, broadcast):
        if broadcast.audience == Broadcast.Audience.SEGMENT:
            return broadcast.segment or (_("campaign conditions") if broadcast.campaign_id else "—")
        if broadcast.audience == Broadcast.Audience.TAG:
            return format_html("{} <code>{}</code>", _("tag"), broadcast.tag)
        return _("CSV")

    @admin.display(description=_("send at"), ordering="scheduled_at")
    def scheduled_shown(self, broadcast):
        if not broadcast.scheduled_at:
            return "—"
        local = timezone.localtime(broadcast.scheduled_at, broadcast.workspace.tz)
        return f"{local:%Y-%m-%d %H:%M} ({broadcast.workspace.timezone})"

    @admin.display(description=_("template variables"))
    def variables_shown(self, broadcast):
        return format_html("<pre style='margin:0'>{}</pre>", json.dumps(broadcast.variables, ensure_ascii=False))

    @admin.display(description="")
    def links(self, broadcast):
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>',
            reverse("admin:broadcasts_broadcast_progress", args=[broadcast.pk]),
            _("progress"),
            reverse("admin:broadcasts_broadcast_report", args=[broadcast.pk]),
            _("report"),
        )

    # Actions on the list ------------------------------------------------------------------------

    def _act_on(self, request, queryset, verb: str) -> None:
        from apps.broadcasts import services

        done = 0
        for broadcast in queryset:
            try:
                with transaction.atomic():
                    getattr(services, f"broadcast_{verb}")(broadcast=broadcast)
                done += 1
            except DomainError as error:
                messages.error(request, f"{broadcast}: {error.detail}")
        if done:
            messages.success(
                request, _("%(verb)s: %(count)d broadcast(s).") % {"verb": VERB_LABELS[verb], "count": done}
            )

    @admin.action(description=_("Start the selected broadcasts now"))
    def start_selected(self, request, queryset):
        self._act_on(request, queryset, "start")

    @admin.action(description=_("Pause the selected broadcasts"))
    def pause_selected(self, request, queryset):
        self._act_on(request, queryset, "pause")

    @admin.action(description=_("Resume the selected broadcasts"))
    def resume_selected(self, request, queryset):
        self._act_on(request, queryset, "resume")

    @admin.action(description=_("Cancel the selected broadcasts"))
    def cancel_selected(self, request, queryset):
        self._act_on(request, queryset, "cancel")

    # Pages of one broadcast ------------------------------------------------------------------

    def get_urls(self):
        def page(view, post=False):
            view = require_POST(view) if post else view
            return self.admin_site.admin_view(view)

        return [
            path("<int:object_id>/act/<str:verb>/", page(self.act_view, post=True), name="broadcasts_broadcast_act"),
            path("<int:object_id>/progress/", page(self.progress_view), name="broadcasts_broadcast_progress"),
            path("<int:object_id>/stats/", page(self.stats_view), name="broadcasts_broadcast_stats"),
            path("<int:object_id>/report/", page(self.report_view), name="broadcasts_broadcast_report"),
            path("<int:object_id>/recipients.csv", page(self.export_view), name="broadcasts_broadcast_export"),
            *super().get_urls(),
        ]

    def _broadcast(self, request, object_id) -> Broadcast:
        broadcast = self.get_object(request, str(object_id))
        if broadcast is None:
            raise Http404
        return broadcast

    def act_view(self, request, object_id, verb):
        """A button of the broadcast's page: schedule (with the time in the workspace's zone),
        start, pause, resume or cancel. A refusal is a message, never a 500."""
        from apps.broadcasts import services

        broadcast = self._broadcast(request, object_id)
        change_url = reverse("admin:broadcasts_broadcast_change", args=[broadcast.pk])
        if verb not in VERBS.get(broadcast.state, ()):
            messages.error(
                request, _("A %(state)s broadcast cannot do that.") % {"state": broadcast.get_state_display()}
            )
            return HttpResponseRedirect(change_url)
        try:
            with transaction.atomic():
                if verb == "schedule":
                    services.broadcast_schedule(broadcast=broadcast, at=self._schedule_moment(request, broadcast))
                else:
                    getattr(services, f"broadcast_{verb}")(broadcast=broadcast)
        except (DomainError, ValidationError) as error:
            detail = error.detail if isinstance(error, DomainError) else " ".join(error.messages)
            messages.error(request, detail)
        else:
            broadcast.refresh_from_db()
            messages.success(request, _("The broadcast is %(state)s.") % {"state": broadcast.get_state_display()})
            if verb in ("start", "resume"):
                return HttpResponseRedirect(reverse("admin:broadcasts_broadcast_progress", args=[broadcast.pk]))
        return HttpResponseRedirect(change_url)

    @staticmethod
    def _schedule_moment(request, broadcast):
        form = ScheduleForm(request.POST)
        if not form.is_valid():
            raise ValidationError(form.errors["send_at"])
        return in_workspace_zone(form.cleaned_data["send_at"], broadcast.workspace)

    def progress_view(self, request, object_id):
        """Sent, delivered, read, failed, replied, converted, the rate and the time left, kept live
        by the workspace's websocket (`broadcast.progress` events of this broadcast)."""
        from apps.broadcasts.results import broadcast_stats

        broadcast = self._broadcast(request, object_id)
        live = {
            "broadcast_id": broadcast.pk,
            "workspace": broadcast.workspace.slug,
            "stats_url": reverse("admin:broadcasts_broadcast_stats", args=[broadcast.pk]),
            "stats": broadcast_stats(broadcast=broadcast),
            "states": {state: str(label) for state, label in Broadcast.State.choices},
            "labels": {"online": _("live"), "offline": _("offline: reconnecting…"), "connecting": _("connecting…")},
        }
        return self._page(request, broadcast, "progress.html", _("Progress"), live=live)

    def stats_view(self, request, object_id):
        from apps.broadcasts.results import broadcast_stats

        return JsonResponse(broadcast_stats(broadcast=self._broadcast(request, object_id)))

    def report_view(self, request, object_id):
        from apps.broadcasts.results import broadcast_failures, broadcast_funnel, broadcast_stats

        broadcast = self._broadcast(request, object_id)
        stats = broadcast_stats(broadcast=broadcast)
        return self._page(
            request,
            broadcast,
            "report.html",
            _("Report"),
            funnel=broadcast_funnel(broadcast=broadcast),
            failures=broadcast_failures(broadcast=broadcast),
            skipped=stats["skipped_by_reason"],
            stats=stats,
        )

    def export_view(self, request, object_id):
        """Every recipient as CSV, streamed (a 100,000-row broadcast never sits in memory), under
        daphne too: there Django would make a list of a synchronous iterator before sending a byte,
        so it gets the analytics export's async one (`streamed`), pulling a chunk of rows at a time."""
        from apps.analytics.api.views import streamed
        from apps.broadcasts.results import broadcast_recipients_csv

        broadcast = self._broadcast(request, object_id)
        chunks = _csv_chunks(broadcast_recipients_csv(broadcast=broadcast))
        response = StreamingHttpResponse(streamed(request, chunks), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="broadcast-{broadcast.pk}-recipients.csv"'
        return response

    def _page(self, request, broadcast, template: str, title, **context):
        return TemplateResponse(
            request,
            f"admin/broadcasts/broadcast/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": broadcast,
                "title": f"{title}: {broadcast}",
                "zone": broadcast.workspace.timezone,
                **context,
            },
        )

    def response_add(self, request, obj, post_url_continue=None):
        if obj.state == Broadcast.State.RUNNING and "_addanother" not in request.POST:
            return HttpResponseRedirect(reverse("admin:broadcasts_broadcast_progress", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except DomainError as error:  # a race after validation (the template withdrawn meanwhile)
            messages.error(request, error.detail)
            return HttpResponseRedirect(request.get_full_path())


def _wall_clock(moment, broadcast):
    if moment is None:
        return None
    return timezone.localtime(moment, broadcast.workspace.tz).replace(tzinfo=None)


# Campaigns ------------------------------------------------------------------------------------


class CampaignForm(forms.ModelForm):
    variables = json_area(
        required=False,
        initial=list,
        help_text=format_html(
            "{} {}",
            VARIABLES_HELP,
            _(
                'Back in stock also takes {"field": "product.name"} (its name on the latest order that had it) and '
                '{"field": "product.sku"}.'
            ),
        ),
    )
    settings = json_area(
        rows=3,
        required=False,
        initial=dict,
        help_text=_(
            'We miss you: {"inactive_days": 30, "not_messaged_days": 14} (no purchase for 30 days, no broadcast '
            "message for 14; these are the defaults). Promotions and back in stock take none."
        ),
    )

    class Meta:
        model = Campaign
        fields = (
            *("workspace", "name", "kind", "enabled", "channel", "template", "variables", "segment", "settings"),
            *("minute", "hour", "day_of_week", "day_of_month", "month_of_year"),
        )

    def clean(self):
        cleaned = super().clean()
        cleaned["variables"] = cleaned.get("variables") or []
        cleaned["settings"] = cleaned.get("settings") or {}
        workspace = cleaned.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        self._check_same_workspace(workspace, cleaned)
        template = cleaned.get("template")
        if template is not None:
            self._check_template(template, cleaned)
        if cleaned.get("kind"):
            crontab = {name: cleaned.get(name) for name in CRONTAB_FIELDS}
            errors = campaign_errors(
                kind=cleaned["kind"], segment=cleaned.get("segment"), settings=cleaned["settings"], crontab=crontab
            )
            for name, problems in errors.items():
                if name in self.fields and name not in self.errors:
                    self.add_error(name, problems)
        self._check_name_unique(workspace, cleaned.get("name"))
        return cleaned

    def _check_same_workspace(self, workspace, cleaned) -> None:
        if workspace is None:
            return
        for name in ("channel", "template", "segment"):
            chosen = cleaned.get(name)
            if chosen is not None and chosen.workspace_id != workspace.pk:
                self.add_error(name, _("Choose one of the campaign's workspace."))

    def _check_template(self, template, cleaned) -> None:
        channel = cleaned.get("channel")
        if channel is not None and template.channel_id != channel.pk:
            self.add_error("template", _("This template belongs to another channel."))
        if template.status != MessageTemplate.Status.APPROVED:
            self.add_error("template", _("Only an approved template can be sent."))
        if cleaned.get("kind"):
            errors = campaign_variables_errors(cleaned["variables"], template=template, kind=cleaned["kind"])
            if errors:
                self.add_error("variables", errors)

    def _check_name_unique(self, workspace, name) -> None:
        if workspace is None or not name or "workspace" in self.fields:
            return  # on add, Django checks the (workspace, name) constraint itself
        if Campaign.objects.filter(workspace=workspace, name=name).exclude(pk=self.instance.pk).exists():
            self.add_error("name", _("This workspace already has a campaign with this name."))


@admin.register(Campaign)
class CampaignAdmin(WorkspaceScopedAdmin):
    form = CampaignForm
    list_display = ("name", "kind", "enabled", "schedule_shown", "template", "segment", "last_run_at", "workspace")
    list_filter = ("kind", "enabled", ("workspace", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("workspace", "template", "segment")
    search_fields = ("name",)
    actions = ["enable", "disable", "run_now"]
    readonly_fields = ("last_run_at", "recent_broadcasts", "beat_task")

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("workspace", "name", "kind", "enabled")}),
            (_("Message"), {"fields": ("channel", "template", "variables")}),
            (_("Audience"), {"fields": ("segment", "settings")}),
            (
                _("Schedule (crontab, in the workspace's time zone; not used by back in stock)"),
                {
                    "fields": ("minute", "hour", "day_of_week", "day_of_month", "month_of_year"),
                    "description": format_html(
                        "{} <b>{}</b>",
                        _("e.g. minute 0, hour 11, the rest * for every day at 11:00. Time zones:"),
                        zones_text(self.administered(request)),
                    ),
                },
            ),
        ]
        if obj is not None:
            fieldsets.append((_("Runs"), {"fields": ("last_run_at", "beat_task", "recent_broadcasts")}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "workspace") if obj is not None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        administered = self.administered(request)
        if "workspace" not in initial and administered.count() == 1:
            initial["workspace"] = administered.get().pk
        return initial

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "template":
            field.queryset = field.queryset.filter(status=MessageTemplate.Status.APPROVED).select_related("channel")
            field.label_from_instance = lambda template: f"{template} · {template.channel.name}"
        return field

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            campaign_schedule_sync(campaign=obj)

    def delete_model(self, request, obj):
        campaign_delete(campaign=obj)

    def delete_queryset(self, request, queryset):
        for campaign in queryset:
            campaign_delete(campaign=campaign)

    @admin.display(description=_("schedule"))
    def schedule_shown(self, campaign):
        if campaign.kind == Campaign.Kind.BACK_IN_STOCK:
            return _("on restock")
        cron = " ".join(
            (campaign.minute, campaign.hour, campaign.day_of_month, campaign.month_of_year, campaign.day_of_week)
        )
        return format_html("<code>{}</code> {}", cron, campaign.workspace.timezone)

    @admin.display(description=_("beat task"))
    def beat_task(self, campaign):
        if not campaign.periodic_task_id:
            return "—"
        task = campaign.periodic_task
        return f"{task.name} ({_('enabled') if task.enabled else _('disabled')}, {task.crontab})"

    @admin.display(description=_("its broadcasts"))
    def recent_broadcasts(self, campaign):
        rows = [
            (
                reverse("admin:broadcasts_broadcast_change", args=[b.pk]),
                b.name,
                b.get_state_display(),
                b.total,
                reverse("admin:broadcasts_broadcast_report", args=[b.pk]),
            )
            for b in Broadcast.objects.filter(campaign=campaign).order_by("-created_at")[:20]
        ]
        if not rows:
            return _("None yet.")
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th></th></tr>{}</table>",
            _("broadcast"),
            _("state"),
            _("recipients"),
            format_html_join(
                "", "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td><a href='{}'>report</a></td></tr>", rows
            ),
        )

    @admin.action(description=_("Enable the selected campaigns"))
    def enable(self, request, queryset):
        count = campaigns_set_enabled(campaigns=queryset, enabled=True)
        messages.success(request, _("%(count)d campaign(s) enabled.") % {"count": count})

    @admin.action(description=_("Disable the selected campaigns"))
    def disable(self, request, queryset):
        count = campaigns_set_enabled(campaigns=queryset, enabled=False)
        messages.success(request, _("%(count)d campaign(s) disabled.") % {"count": count})

    @admin.action(description=_("Run the selected campaigns now"))
    def run_now(self, request, queryset):
        for campaign in queryset:
            try:
                broadcast = campaign_run(campaign_id=campaign.pk, created_by=request.user)
            except DomainError as error:
                messages.error(request, f"{campaign}: {error.detail}")
                continue
            if broadcast is None:
                messages.warning(
                    request,
                    _("%(name)s did not run: it is disabled, runs on restocks, or has just run.") % {"name": campaign},
                )
            else:
                url = reverse("admin:broadcasts_broadcast_progress", args=[broadcast.pk])
                messages.success(request, format_html('{}: <a href="{}">{}</a>', campaign, url, broadcast))


# Rules ----------------------------------------------------------------------------------------


class BroadcastSettingsForm(forms.ModelForm):
    stop_words = json_area(
        rows=3, required=False, initial=list, help_text=BroadcastSettings._meta.get_field("stop_words").help_text
    )
    start_words = json_area(
        rows=2, required=False, initial=list, help_text=BroadcastSettings._meta.get_field("start_words").help_text
    )
    stop_confirmation = json_area(
        rows=7,
        required=False,
        initial=dict,
        help_text=_('The confirmation of an opt-out per language: {"en": "…", "ar": "…"}'),
    )

    class Meta:
        model = BroadcastSettings
        fields = (
            *("workspace", "stop_words", "start_words", "stop_confirmation"),
            *("weekly_cap", "quiet_from", "quiet_until", "conversion_window_hours"),
        )

    def clean_stop_words(self):
        return self._words("stop_words")

    def clean_start_words(self):
        return self._words("start_words")

    def _words(self, name: str) -> list:
        words = self.cleaned_data.get(name) or []
        if not isinstance(words, list) or not all(isinstance(word, str) and word.strip() for word in words):
            raise ValidationError(_('A JSON list of words, e.g. ["stop", "стоп"].'))
        return [word.strip() for word in words]

    def clean_stop_confirmation(self):
        texts = self.cleaned_data.get("stop_confirmation") or {}
        if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
            raise ValidationError(_('A JSON object of texts by language, e.g. {"en": "You are unsubscribed."}'))
        return texts


@admin.register(BroadcastSettings)
class BroadcastSettingsAdmin(WorkspaceScopedAdmin):
    """One per workspace: the rules every broadcast and campaign of it follows."""

    form = BroadcastSettingsForm
    list_display = ("__str__", "weekly_cap", "quiet_from", "quiet_until", "conversion_window_hours")
    fieldsets = [
        (None, {"fields": ("workspace",)}),
        (_("Opting out"), {"fields": ("stop_words", "start_words", "stop_confirmation")}),
        (
            _("Respect"),
            {
                "fields": ("weekly_cap", "quiet_from", "quiet_until"),
                "description": _("Quiet hours are in the contact's time zone."),
            },
        ),
        (_("Results"), {"fields": ("conversion_window_hours",)}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return ("workspace",) if obj is not None else ()

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        free = self.administered(request).filter(broadcast_settings__isnull=True)
        if "workspace" not in initial and free.count() == 1:
            initial["workspace"] = free.get().pk
        return initial


def _csv_chunks(lines: Iterator[str]) -> Iterator[bytes]:
    """CSV lines joined EXPORT_CHUNK_ROWS at a time; closing this closes `lines` (and its cursor)."""
    try:
        while chunk := "".join(islice(lines, EXPORT_CHUNK_ROWS)):
            yield chunk.encode()
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()
