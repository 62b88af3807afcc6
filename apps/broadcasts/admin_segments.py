"""Segments in the admin: a supervisor writes the conditions as JSON (an example and the reference
of every field and op are on the page), mistakes come back as form errors naming the condition,
never a 500, and the number of matching contacts follows the editing live: the change form posts
the text, debounced, to `count/` (scoped like every admin page to the person's workspaces).
The list shows each segment's size, all of them counted in one query."""

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from apps.broadcasts.models import Segment
from apps.broadcasts.segments import EXAMPLE, reference_rows, segment_count, segment_counts, segment_errors
from apps.core.admin import WorkspaceScopedAdmin
from apps.core.exceptions import DomainError

KEY_ORDER = {"match": 0, "conditions": 1, "field": 0, "op": 1, "value": 2}


def _readable(node):
    """Keys in the order a person reads them (PostgreSQL's jsonb keeps its own order)."""
    if isinstance(node, dict):
        return {key: _readable(node[key]) for key in sorted(node, key=lambda key: KEY_ORDER.get(key, 9))}
    if isinstance(node, list):
        return [_readable(item) for item in node]
    return node


class DefinitionField(forms.JSONField):
    """The conditions, shown indented so that each reads on its own line."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(_readable(value), ensure_ascii=False, indent=2)


class SegmentForm(forms.ModelForm):
    definition = DefinitionField(
        label=_("Conditions"),
        initial=EXAMPLE,
        error_messages={"required": _('Write the conditions: {"match": "all", "conditions": [...]}.')},
        widget=forms.Textarea(attrs={"rows": 18, "cols": 80, "style": "font-family: monospace; font-size: 12px"}),
        help_text=_(
            '{"match": "all" or "any", "conditions": [...]}: each condition is {"field", "op", "value"} or a '
            "group of the same shape (at most 5 deep, 100 conditions). See “Fields and ops” below."
        ),
    )

    class Meta:
        model = Segment
        fields = ("workspace", "name", "description", "definition")

    def clean(self):
        cleaned = super().clean()
        workspace = cleaned.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        if "definition" in cleaned:
            errors = segment_errors(cleaned["definition"], workspace=workspace)
            if errors:
                self.add_error("definition", errors)
        self._check_name_unique(workspace, cleaned.get("name"))
        return cleaned

    def _check_name_unique(self, workspace, name) -> None:
        # On a saved segment the workspace is read-only, so Django's own check of the
        # (workspace, name) constraint is skipped; without this a clash would be an IntegrityError.
        if workspace is None or not name or "workspace" in self.fields:
            return
        clash = Segment.objects.filter(workspace=workspace, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            self.add_error("name", ValidationError(_("This workspace already has a segment with this name.")))


@admin.register(Segment)
class SegmentAdmin(WorkspaceScopedAdmin):
    form = SegmentForm
    list_display = ("name", "contacts", "description", "updated_at", "workspace")
    list_filter = (("workspace", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("workspace",)
    search_fields = ("name", "description")
    readonly_fields = ("matching", "reference")

    def get_fieldsets(self, request, obj=None):
        return [
            (None, {"fields": ("workspace", "name", "description", "definition", "matching")}),
            (_("Fields and ops"), {"fields": ("reference",), "classes": ("collapse",)}),
        ]

    def get_readonly_fields(self, request, obj=None):
        # The tags and custom fields it names are its workspace's; broadcasts point at it: it does not move.
        return (*self.readonly_fields, "workspace") if obj is not None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        administered = self.administered(request)
        if "workspace" not in initial and administered.count() == 1:
            initial["workspace"] = administered.get().pk
        return initial

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        live_count = {
            "url": reverse("admin:broadcasts_segment_count"),
            "object_id": object_id,
            "counting": str(_("Counting…")),
            "failed": str(_("Could not count just now.")),
        }
        extra_context = {**(extra_context or {}), "segment_live_count": live_count}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        count = self.admin_site.admin_view(require_POST(self.count_view))
        return [path("count/", count, name="broadcasts_segment_count"), *super().get_urls()]

    def count_view(self, request):
        """POST {"definition": <the textarea's text>, "workspace": id | "object_id": id} →
        {"count", "text"}, or {"errors": [...]} with 400 (404 for a workspace not theirs)."""
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _count_errors([_('Send {"definition": ..., "workspace": id}.')])
        definition = body.get("definition")
        if isinstance(definition, str):
            try:
                definition = json.loads(definition)
            except ValueError as error:
                return _count_errors([_("The conditions are not valid JSON: %(error)s.") % {"error": error}])
        workspace = self._count_workspace(request, body)
        if workspace is None:
            return _count_errors([_("Choose a workspace first.")])
        if workspace is False:
            return _count_errors([_("No such workspace.")], status=404)
        errors = segment_errors(definition, workspace=workspace)
        if errors:
            return _count_errors(errors)
        try:
            count = segment_count(workspace_id=workspace.pk, definition=definition)
        except DomainError as error:
            return _count_errors([error.detail])
        return JsonResponse({"count": count, "text": _matching_text(count)})

    def _count_workspace(self, request, body: dict):
        """The workspace to count in: the segment's own, or the one chosen in the form; False
        for one this person does not administer (as if it did not exist), None when not chosen."""
        object_id, workspace_id = body.get("object_id"), body.get("workspace")
        if object_id:
            segment = self.get_object(request, str(object_id)) if str(object_id).isdigit() else None
            return segment.workspace if segment is not None else False
        if workspace_id in (None, ""):
            return None
        if not str(workspace_id).isdigit():
            return False
        return self.administered(request).filter(pk=int(workspace_id)).first() or False

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # the page's segments, cached for the template too
        sizes = segment_counts(segments=rows)
        for segment in rows:
            segment.matching_count = sizes.get(segment.pk)
        return changelist

    @admin.display(description=_("contacts"))
    def contacts(self, segment):
        size = getattr(segment, "matching_count", None)
        return "—" if size is None else f"{size:,}"

    @admin.display(description=_("matching contacts"))
    def matching(self, segment):
        count = ""
        if segment is not None and segment.pk:
            try:
                count = _matching_text(segment_count(workspace_id=segment.workspace_id, definition=segment.definition))
            except DomainError:
                count = ""
        return format_html(
            '<output id="segment-count" aria-live="polite">{}</output><ul id="segment-count-errors" class="errorlist">'
            "</ul>",
            count,
        )

    @admin.display(description=_("fields and ops"))
    def reference(self, segment):
        rows = [
            (name, what, format_html_join(mark_safe("<br>"), "<code>{}</code>: {}", ops))
            for name, what, ops in reference_rows()
        ]
        return format_html(
            "<table><tr><th>{}</th><th></th><th>{}</th></tr>{}</table><p>{}</p><pre>{}</pre>",
            _("field"),
            _("op: value"),
            format_html_join("", "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", rows),
            _(
                "Dates and days count in UTC. “is_not” and “has_not” include contacts with no value. "
                'A group inside a group: {"match": "any", "conditions": [...]} in place of a condition. Example:'
            ),
            json.dumps(EXAMPLE, indent=2),
        )


def _matching_text(count: int) -> str:
    return ngettext("%(count)s contact matches", "%(count)s contacts match", count) % {"count": f"{count:,}"}


def _count_errors(errors: list, status: int = 400) -> JsonResponse:
    return JsonResponse({"errors": [str(error) for error in errors]}, status=status)
