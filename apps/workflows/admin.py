"""The supervisor's workshop: workflows with their steps inline (each step's settings checked as
the form is saved, never a 500), a diagram of the graph, versions, import and export as JSON, a
"try it" page; the runs with their step-by-step log; FAQ entries; each workspace's bot settings.

Everything is scoped to the workspaces the person administers (apps.core.admin)."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from apps.core.admin import WorkspaceScopedAdmin, WorkspaceScopedInline
from apps.workflows import views
from apps.workflows.definition import (
    LANGUAGE,
    SPECS,
    definition_of,
    step_names_errors,
    step_settings_errors,
    trigger_settings_errors,
    workflow_publish,
    workflows_export,
    workflows_set_enabled,
    workspace_names,
)
from apps.workflows.diagram import diagram_svg
from apps.workflows.models import BotSettings, FaqEntry, Run, RunLog, Step, Workflow, WorkflowVersion
from apps.workflows.selectors import step_drop_off
from apps.workspaces.admin import AuditedAdmin
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import audit_record


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a menu's options read one per line."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def json_area(rows: int = 6, **kwargs) -> PrettyJSONField:
    widget = forms.Textarea(attrs={"rows": rows, "cols": 64, "style": "font-family: monospace; font-size: 12px"})
    return PrettyJSONField(widget=widget, **kwargs)


def _same_workspace(form: forms.ModelForm, field: str, workspace) -> None:
    chosen = form.cleaned_data.get(field)
    if chosen is not None and workspace is not None and chosen.workspace_id != workspace.pk:
        form.add_error(field, _("Choose a team of the same workspace."))


# Workflows -----------------------------------------------------------------------------------


class StepForm(forms.ModelForm):
    settings = json_area(
        rows=9,
        required=False,
        initial=dict,
        help_text=_("JSON; see “What each kind of step takes” below."),
    )
    position = forms.IntegerField(
        required=False, min_value=0, initial=0, widget=forms.NumberInput(attrs={"style": "width: 4em"})
    )

    class Meta:
        model = Step
        fields = ("key", "kind", "settings", "next", "position")

    def clean_settings(self):
        return self.cleaned_data.get("settings") or {}

    def clean_position(self):
        return self.cleaned_data.get("position") or 0


class StepFormSet(BaseInlineFormSet):
    """Checks each step against the others: keys unique, every key a step points to exists, the
    first step is one of them, the teams and workflows named exist in the workspace."""

    def clean(self):
        # Not super().clean(): its duplicate check says "Please correct the duplicate data"; the row
        # check below names the key. Each row still checks its key against the saved steps.
        kept = [f for f in self.forms if not self._should_delete_form(f) and (f.has_changed() or f.instance.pk)]
        keys = [form.cleaned_data.get("key") or form["key"].value() for form in kept]
        workflow = self.instance
        # Without a workspace (the form above has an error) team and workflow names cannot be checked yet.
        names = workspace_names(workflow.workspace) if workflow.workspace_id else None
        if names:
            names[1].add(workflow.name)
        for form, key in zip(kept, keys, strict=True):
            self._check_step(form, key, set(keys), keys.count(key) > 1, names)
        if not kept:
            raise ValidationError(_("Add at least one step."))
        if workflow.start_step and workflow.start_step not in keys:
            raise ValidationError(
                _("The first step “%(key)s” is not one of the steps below.") % {"key": workflow.start_step}
            )

    def _check_step(self, form, key, keys: set, duplicate: bool, names: tuple | None) -> None:
        if duplicate:
            form.add_error("key", _("Two steps have the key “%(key)s”.") % {"key": key})
        data = form.cleaned_data
        if data.get("next") and data["next"] not in keys:
            form.add_error("next", _("No step has the key “%(key)s”.") % {"key": data["next"]})
        if "kind" in data and "settings" in data:
            kind, settings = data["kind"], data["settings"]
            errors = step_settings_errors(kind, settings, keys)
            if names is not None:
                errors += step_names_errors(kind, settings, teams=names[0], workflows=names[1])
            if errors:
                form.add_error("settings", errors)


class StepInline(WorkspaceScopedInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    fields = ("key", "kind", "settings", "next", "position")
    ordering = ("position", "id")

    def get_extra(self, request, obj=None, **kwargs):
        return 3 if obj is None else 1


class WorkflowForm(forms.ModelForm):
    trigger_settings = json_area(
        rows=3,
        required=False,
        initial=dict,
        help_text=Workflow._meta.get_field("trigger_settings").help_text,
    )

    class Meta:
        model = Workflow
        fields = (
            "workspace",
            "name",
            "description",
            "enabled",
            "trigger",
            "trigger_settings",
            "priority",
            "start_step",
            "max_steps",
            "handover_team",
        )

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        settings = cleaned.get("trigger_settings") or {}
        cleaned["trigger_settings"] = settings
        if cleaned.get("trigger"):
            errors = trigger_settings_errors(cleaned["trigger"], settings, workspace=workspace)
            if errors:
                self.add_error("trigger_settings", errors)
        _same_workspace(self, "handover_team", workspace)
        return cleaned


def _kinds_reference() -> str:
    rows = []
    for kind, (fields, required) in SPECS.items():
        names = [f"<b>{name}</b>" if name in required else name for name in fields]
        rows.append((kind, kind.label, mark_safe(", ".join(names))))  # noqa: S308 (our own field names)
    return format_html(
        "<p>{}</p><table><tr><th>kind</th><th></th><th>settings (bold: required)</th></tr>{}</table><p>{}</p>",
        _(
            'Texts are a string or one per language: {"en": "Hi", "ru": "Привет"}, and may use {{contact.name}}, '
            "{{vars.name}}, {{order.status}}, {{queue.position}}, {{team.opens_at}}… A step key in a setting "
            "(next, fallback, timeout, found…) left empty means the step's “then”; an empty “then” ends the run."
        ),
        format_html_join("", "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", rows),
        _(
            'Example menu: {"text": "How can we help?", "options": [{"id": "order", "title": "My order", '
            '"next": "ask_order"}, {"id": "person", "title": "Talk to a person", "next": "to_support"}]}'
        ),
    )


@admin.register(Workflow)
class WorkflowAdmin(AuditedAdmin, WorkspaceScopedAdmin):
    form = WorkflowForm
    inlines = [StepInline]
    list_display = ("name", "trigger", "enabled", "version", "last_run_at", "workspace", "try_it")
    list_filter = ("trigger", "enabled", ("workspace", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("workspace",)
    search_fields = ("name", "description")
    actions = ["enable", "disable", "export_json"]
    readonly_fields = ("version", "last_run_at", "diagram", "published_versions", "drop_off", "kinds_reference")

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("workspace", "name", "description", "enabled")}),
            (_("When it starts"), {"fields": ("trigger", "trigger_settings", "priority")}),
            (_("How it runs"), {"fields": ("start_step", "max_steps", "handover_team")}),
            (_("What each kind of step takes"), {"fields": ("kinds_reference",), "classes": ("collapse",)}),
        ]
        if obj is not None:
            fieldsets.insert(1, (_("Diagram"), {"fields": ("diagram",)}))
            fieldsets.append((_("Versions"), {"fields": ("version", "last_run_at", "published_versions")}))
            fieldsets.append((_("Where customers stop"), {"fields": ("drop_off",)}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        # A workflow's teams and steps belong to its workspace: it does not move.
        return (*self.readonly_fields, "workspace") if obj is not None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        administered = self.administered(request)
        if "workspace" not in initial and administered.count() == 1:
            initial["workspace"] = administered.get().pk
        return initial

    def save_formset(self, request, form, formset, change):
        if formset.model is not Step:
            return super().save_formset(request, form, formset, change)
        rows = formset.save(commit=False)
        for row in formset.deleted_objects:  # first, so a new step may take a deleted one's key
            row.delete()
        # Keys are unique per workflow, and two steps may swap theirs: park the renamed ones first.
        renamed = [f.instance.pk for f in formset.initial_forms if f.instance in rows and "key" in f.changed_data]
        for pk in renamed:
            Step.objects.filter(pk=pk).update(key=f"~{pk}")
        for index, step_form in enumerate(formset.forms):
            row = step_form.instance
            if row in rows:
                row.workspace_id = form.instance.workspace_id
                row.position = row.position or (index + 1) * 10
                row.save()
        return None

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        before = form.instance.version
        version = workflow_publish(workflow=form.instance, user=request.user)
        if version.number != before:
            messages.info(
                request,
                _("Published as version %(number)d. Conversations already in this workflow finish on theirs.")
                % {"number": version.number},
            )

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(lambda request, *args, **kwargs: view(request, self, *args, **kwargs))

        return [
            path("import/", wrap(views.workflow_import_page), name="workflows_workflow_import"),
            path("<int:object_id>/export/", wrap(views.workflow_export_download), name="workflows_workflow_export"),
            path(
                "<int:object_id>/versions/<int:number>/",
                wrap(views.workflow_version_download),
                name="workflows_workflow_version",
            ),
            path("<int:object_id>/try/", wrap(views.try_page), name="workflows_workflow_try"),
            path("<int:object_id>/try/state/", wrap(views.try_state), name="workflows_workflow_try_state"),
            path("<int:object_id>/try/restart/", wrap(views.try_restart), name="workflows_workflow_try_restart"),
            path("<int:object_id>/try/send/", wrap(views.try_send), name="workflows_workflow_try_send"),
            *super().get_urls(),
        ]

    @admin.display(description=_("try it"))
    def try_it(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:workflows_workflow_try", args=[obj.pk]), _("Try it"))

    @admin.display(description=_("diagram"))
    def diagram(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        svg = diagram_svg(definition_of(obj))  # every text in it escaped by diagram_svg
        return format_html(
            '<div style="overflow:auto; max-height:85vh; border:1px solid #ddd; background:#fff">{}</div>',
            mark_safe(svg),  # noqa: S308
        )

    @admin.display(description=_("published versions"))
    def published_versions(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        versions = (
            WorkflowVersion.objects.filter(workflow=obj)
            .select_related("created_by")
            .annotate(run_count=Count("runs"))
            .order_by("-number")[:20]
        )
        rows = [
            (
                version.number,
                version.created_at.strftime("%Y-%m-%d %H:%M"),
                version.created_by or "—",
                version.run_count,
                reverse("admin:workflows_workflow_version", args=[obj.pk, version.number]),
            )
            for version in versions
        ]
        runs = f"{reverse('admin:workflows_run_changelist')}?workflow__id__exact={obj.pk}"
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>{}</table>"
            "<p><a href='{}'>{}</a></p>",
            _("version"),
            _("published"),
            _("by"),
            _("runs"),
            format_html_join(
                "", "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href='{}'>JSON</a></td></tr>", rows
            ),
            runs,
            _("See this workflow's runs and their logs"),
        )

    @admin.display(description=_("drop-off per step"))
    def drop_off(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        rows = [
            (row["step"], row["reached"], row["stopped"], row["waiting"], f"{row['drop_off']:.0%}")
            for row in step_drop_off(workflow=obj)
        ]
        if not rows:
            return _("No runs yet.")
        return format_html(
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>",
            _("step"),
            _("reached"),
            _("stopped there"),
            _("waiting there now"),
            _("drop-off"),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description=_("step kinds"))
    def kinds_reference(self, obj):
        return _kinds_reference()

    @admin.action(description=_("Enable the selected workflows"))
    def enable(self, request, queryset):
        _audit_enabled(request, queryset, enabled=True)
        count = workflows_set_enabled(workflows=queryset, enabled=True)
        messages.success(request, _("%(count)d workflows enabled.") % {"count": count})

    @admin.action(description=_("Disable the selected workflows (running conversations finish)"))
    def disable(self, request, queryset):
        _audit_enabled(request, queryset, enabled=False)
        count = workflows_set_enabled(workflows=queryset, enabled=False)
        messages.success(request, _("%(count)d workflows disabled.") % {"count": count})

    @admin.action(description=_("Export the selected workflows as JSON"))
    def export_json(self, request, queryset):
        workflows = list(queryset.select_related("handover_team").order_by("name"))
        body = json.dumps(workflows_export(workflows=workflows), ensure_ascii=False, indent=2)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="workflows.json"'
        return response


def _audit_enabled(request, queryset, *, enabled: bool) -> None:
    for workflow in queryset.exclude(enabled=enabled):
        audit_record(action=AuditEntry.Action.CHANGE, obj=workflow, details={"enabled": enabled}, request=request)


# Runs ----------------------------------------------------------------------------------------


class RunLogInline(WorkspaceScopedInline):
    model = RunLog
    fields = ("at", "version", "step", "kind", "outcome", "detail")
    readonly_fields = fields
    ordering = ("at", "id")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _pretty(value) -> str:
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, ensure_ascii=False, indent=2))


@admin.register(Run)
class RunAdmin(WorkspaceScopedAdmin):
    """What each conversation did in a workflow, step by step (read-only)."""

    list_display = (
        "id",
        "workflow",
        "version_number",
        "conversation_link",
        "state",
        "step",
        "steps_taken",
        "started_at",
        "finished_at",
    )
    list_filter = (
        "state",
        ("workflow", admin.RelatedOnlyFieldListFilter),
        ("workspace", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("workflow", "version")
    fields = (
        "workflow",
        "version_number",
        "conversation_link",
        "state",
        "step",
        "outcome",
        "variables_shown",
        "waiting_shown",
        "timeout_at",
        "steps_taken",
        "started_at",
        "updated_at",
        "finished_at",
    )
    readonly_fields = fields
    inlines = [RunLogInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("version"))
    def version_number(self, run):
        return f"v{run.version.number}"

    @admin.display(description=_("conversation"))
    def conversation_link(self, run):
        url = reverse("admin:conversations_conversation_change", args=[run.conversation_id])
        return format_html('<a href="{}">#{}</a>', url, run.conversation_id)

    @admin.display(description=_("variables"))
    def variables_shown(self, run):
        return _pretty(run.variables)

    @admin.display(description=_("waiting for"))
    def waiting_shown(self, run):
        return _pretty(run.waiting)


# FAQ -----------------------------------------------------------------------------------------


class LinesField(forms.CharField):
    """A list edited as one item per line."""

    widget = forms.Textarea(attrs={"rows": 10, "cols": 80})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        if isinstance(value, list | tuple):
            return [str(line).strip() for line in value if str(line).strip()]
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        too_long = [line for line in value if len(line) > 500]
        if too_long:
            raise ValidationError(_("Keep each line under 500 characters: “%(line)s…”") % {"line": too_long[0][:40]})


class FaqEntryForm(forms.ModelForm):
    examples = LinesField(help_text=FaqEntry._meta.get_field("examples").help_text)

    class Meta:
        model = FaqEntry
        fields = ("workspace", "intent", "language", "examples", "answer", "follow_up")

    def clean_language(self):
        language = self.cleaned_data["language"].strip().lower()
        if not LANGUAGE.fullmatch(language):
            raise ValidationError(_("A language code such as en, ru or zh-hant."))
        return language


@admin.register(FaqEntry)
class FaqEntryAdmin(WorkspaceScopedAdmin):
    form = FaqEntryForm
    list_display = ("intent", "language", "example_count", "follow_up", "updated_at", "workspace")
    list_filter = ("language", "follow_up", ("workspace", admin.RelatedOnlyFieldListFilter))
    search_fields = ("intent", "answer")

    @admin.display(description=_("examples"))
    def example_count(self, entry):
        return len(entry.examples or [])

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        administered = self.administered(request)
        if "workspace" not in initial and administered.count() == 1:
            initial["workspace"] = administered.get().pk
        return initial


# Bot settings --------------------------------------------------------------------------------


class BotSettingsForm(forms.ModelForm):
    human_keywords = json_area(
        rows=8, required=False, help_text=BotSettings._meta.get_field("human_keywords").help_text
    )
    handover_text = json_area(rows=6, required=False, help_text=BotSettings._meta.get_field("handover_text").help_text)

    class Meta:
        model = BotSettings
        fields = ("workspace", "faq_threshold", "human_keywords", "handover_text", "fallback_team", "csat_alert_below")

    def _per_language(self, field: str, valid) -> dict:
        value = self.cleaned_data.get(field) or {}
        if not isinstance(value, dict) or any(
            not LANGUAGE.fullmatch(str(k)) or not valid(v) for k, v in value.items()
        ):
            raise ValidationError(_("One entry per language code, as in the example."))
        return value

    def clean_human_keywords(self):
        return self._per_language(
            "human_keywords", lambda words: isinstance(words, list) and all(isinstance(w, str) and w for w in words)
        )

    def clean_handover_text(self):
        return self._per_language("handover_text", lambda text: isinstance(text, str) and text.strip())

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        _same_workspace(self, "fallback_team", workspace)
        return cleaned


@admin.register(BotSettings)
class BotSettingsAdmin(WorkspaceScopedAdmin):
    form = BotSettingsForm
    list_display = ("__str__", "faq_threshold", "fallback_team", "csat_alert_below")
    list_select_related = ("workspace", "fallback_team")

    def get_readonly_fields(self, request, obj=None):
        return ("workspace",) if obj is not None else ()

    def has_add_permission(self, request):
        # One per workspace: only where one is missing.
        return super().has_add_permission(request) and self.administered(request).filter(bot_settings=None).exists()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "workspace":
            field.queryset = field.queryset.filter(bot_settings=None)
        return field
