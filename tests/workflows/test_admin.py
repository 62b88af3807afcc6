"""The supervisor's workflow admin: building a menu with its steps inline, mistakes shown as form
errors (never a 500, nothing saved), versions, the diagram, JSON export and import, FAQ examples
one per line, workspace scoping, and the try-it page playing a workflow in a test conversation."""

import json

import pytest

from apps.connectors.base import OutboundMessage
from apps.connectors.models import Channel, ChannelKind
from apps.connectors.registry import connector_for
from apps.contacts.services import contact_resolve
from apps.conversations.models import Conversation, Message
from apps.core.exceptions import DomainError
from apps.workflows.definition import (
    definition_errors,
    definition_of,
    step_settings_errors,
    workflow_import,
    workflow_publish,
)
from apps.workflows.diagram import diagram_svg
from apps.workflows.models import BotSettings, FaqEntry, Run, RunLog, Step, Workflow, WorkflowVersion
from apps.workflows.views import sandbox_channel
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/workflows/workflow/"

MENU_STEPS = [
    {
        "key": "menu",
        "kind": "menu",
        "settings": {
            "text": {"en": "Hi {{contact.first_name}}! How can we help?", "ru": "Здравствуйте! Чем помочь?"},
            "options": [
                {"id": "products", "title": "Product questions", "next": "to_orders"},
                {"id": "status", "title": "Order status", "next": "ask_order"},
            ],
        },
        "next": "",
    },
    {
        "key": "ask_order",
        "kind": "ask",
        "settings": {"text": "Your order number?", "input": "order_number", "save_as": "order_number"},
        "next": "thanks",
    },
    {"key": "thanks", "kind": "message", "settings": {"text": "Thanks! Order {{vars.order_number}}."}, "next": ""},
    {"key": "to_orders", "kind": "route", "settings": {"team": "Orders"}, "next": ""},
]


def menu_definition(**fields) -> dict:
    return {
        "name": "Support menu",
        "description": "",
        "enabled": True,
        "trigger": "conversation_opened",
        "trigger_settings": {"channels": ["whatsapp"]},
        "priority": 100,
        "start_step": "menu",
        "max_steps": 60,
        "handover_team": "Orders",
        "steps": json.loads(json.dumps(MENU_STEPS)),
        **fields,
    }


def step_rows(steps: list[dict], existing: list[Step] = ()) -> dict:
    """The inline formset's POST data: existing rows first (with their ids), then new ones."""
    data = {
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": str(len(existing)),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for index, step in enumerate(steps):
        prefix = f"steps-{index}-"
        data |= {
            f"{prefix}key": step["key"],
            f"{prefix}kind": step["kind"],
            f"{prefix}settings": json.dumps(step.get("settings", {}), ensure_ascii=False),
            f"{prefix}next": step.get("next", ""),
            f"{prefix}position": str((index + 1) * 10),
        }
        if index < len(existing):
            data |= {f"{prefix}id": str(existing[index].pk), f"{prefix}workflow": str(existing[index].workflow_id)}
        if step.get("DELETE"):
            data[f"{prefix}DELETE"] = "on"
    return data


def workflow_form(workspace, steps=MENU_STEPS, existing=(), **fields) -> dict:
    return {
        "workspace": str(workspace.pk),
        "name": "Support menu",
        "description": "",
        "enabled": "on",
        "trigger": "conversation_opened",
        "trigger_settings": '{"channels": ["whatsapp"]}',
        "priority": "100",
        "start_step": "menu",
        "max_steps": "60",
        "handover_team": "",
        **step_rows(steps, existing),
        **fields,
    }


def _messages(errors) -> list[str]:
    data = errors.get_json_data()
    items = data if isinstance(data, list) else [item for field in data.values() for item in field]
    return [item["message"] for item in items]


def errors_of(response) -> str:
    """Every error the admin page shows, main form and inline rows, as one text."""
    found = _messages(response.context["adminform"].form.errors)
    for inline in response.context["inline_admin_formsets"]:
        found += _messages(inline.formset.non_form_errors())
        for form in inline.formset.forms:
            found += _messages(form.errors)
    return " | ".join(found)


def form_errors(form) -> str:
    return " | ".join(_messages(form.errors))


def test_supervisor_builds_a_menu_workflow_with_steps_inline_and_it_is_published_as_version_1(tenants):
    client = client_for(tenants.supervisor)

    response = client.post(f"{CHANGELIST}add/", workflow_form(tenants.a, handover_team=str(tenants.team_a.pk)))

    assert response.status_code == 302, errors_of(response)
    workflow = Workflow.objects.get(workspace=tenants.a, name="Support menu")
    assert [s.key for s in workflow.steps.order_by("position")] == ["menu", "ask_order", "thanks", "to_orders"]
    assert set(workflow.steps.values_list("workspace_id", flat=True)) == {tenants.a.pk}
    assert workflow.version == 1
    version = WorkflowVersion.objects.get(workflow=workflow)
    assert version.number == 1 and version.created_by == tenants.supervisor
    assert version.definition == definition_of(workflow)
    assert version.definition["handover_team"] == "Orders"
    assert version.definition["steps"][0]["settings"]["options"][1]["next"] == "ask_order"


def test_the_add_page_offers_only_the_supervisors_workspace_and_teams(tenants):
    response = client_for(tenants.supervisor).get(f"{CHANGELIST}add/")

    form = response.context["adminform"].form
    assert set(form.fields["handover_team"].queryset) == {tenants.team_a}
    assert set(form.fields["workspace"].queryset) == {tenants.a}
    assert form.initial["workspace"] == tenants.a.pk


BAD_STEPS = {
    "an option leading to an unknown step": (
        0,
        {"options": [{"id": "a", "title": "A", "next": "nowhere"}], "text": "Pick"},
        'no step has the key "nowhere"',
    ),
    "an empty option list": (0, {"text": "Pick", "options": []}, "at least one option"),
    "two options with one id": (
        0,
        {"text": "Pick", "options": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]},
        'two options have the id "a"',
    ),
    "an option without an id": (0, {"text": "Pick", "options": [{"title": "A"}]}, "needs an id"),
    "a regular expression that does not compile": (
        1,
        {"text": "Number?", "input": "text", "save_as": "n", "pattern": "([0-9"},
        "not a valid regular expression",
    ),
}


@pytest.mark.parametrize("case", BAD_STEPS, ids=list(BAD_STEPS))
def test_an_invalid_step_is_a_form_error_and_nothing_is_saved(tenants, case):
    index, settings, message = BAD_STEPS[case]
    steps = json.loads(json.dumps(MENU_STEPS))
    steps[index]["settings"] = settings

    response = client_for(tenants.supervisor).post(f"{CHANGELIST}add/", workflow_form(tenants.a, steps=steps))

    assert response.status_code == 200
    assert message in errors_of(response)
    assert not Workflow.objects.exists() and not Step.objects.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [{**MENU_STEPS[2], "next": "ghost"}]}, "No step has the key “ghost”"),
        ({"start_step": "nope"}, "The first step “nope” is not one of the steps below"),
        ({"steps": [MENU_STEPS[2], MENU_STEPS[2]], "start_step": ""}, "Two steps have the key “thanks”"),
        ({"steps": [], "start_step": ""}, "Add at least one step"),
        ({"steps": [{"key": "go", "kind": "route", "settings": {"team": "Couriers"}}], "start_step": ""}, "no team"),
        ({"trigger": "tag_added", "trigger_settings": "{}"}, "trigger settings, tag: required"),
        ({"trigger_settings": "{not json"}, "Enter a valid JSON"),
        ({"handover_team": "TEAM_B"}, "Select a valid choice"),
    ],
)
def test_mistakes_across_steps_are_form_errors_never_500(tenants, change, message):
    steps = change.pop("steps", MENU_STEPS)
    if change.get("handover_team") == "TEAM_B":
        change["handover_team"] = str(tenants.team_b.pk)

    response = client_for(tenants.supervisor).post(
        f"{CHANGELIST}add/", workflow_form(tenants.a, steps=steps, **change)
    )

    assert response.status_code == 200
    assert message in errors_of(response)
    assert not Workflow.objects.exists()


def _sandbox_conversation(workspace, name="Tester"):
    channel = sandbox_channel(workspace=workspace)
    contact = contact_resolve(channel=channel, external_id=f"x-{name}", name=name)
    return Conversation.objects.create(workspace=workspace, contact=contact, channel=channel)


def test_editing_publishes_version_2_while_a_run_on_version_1_keeps_its_definition(tenants):
    client = client_for(tenants.supervisor)
    client.post(f"{CHANGELIST}add/", workflow_form(tenants.a))
    workflow = Workflow.objects.get()
    v1 = workflow.versions.get()
    run = Run.objects.create(
        workspace=tenants.a, conversation=_sandbox_conversation(tenants.a), workflow=workflow, version=v1, step="menu"
    )
    existing = list(workflow.steps.order_by("position"))
    steps = json.loads(json.dumps(MENU_STEPS))
    steps[2]["settings"]["text"] = "Thank you, that's all."

    response = client.post(f"{CHANGELIST}{workflow.pk}/change/", workflow_form(tenants.a, steps, existing))

    assert response.status_code == 302, errors_of(response)
    workflow.refresh_from_db()
    assert workflow.version == 2
    assert workflow.versions.get(number=2).definition["steps"][2]["settings"]["text"] == "Thank you, that's all."
    run.refresh_from_db()
    assert run.version.number == 1
    assert run.version.definition["steps"][2]["settings"]["text"] == "Thanks! Order {{vars.order_number}}."


def test_saving_without_a_change_keeps_the_version(tenants):
    client = client_for(tenants.supervisor)
    client.post(f"{CHANGELIST}add/", workflow_form(tenants.a))
    workflow = Workflow.objects.get()
    existing = list(workflow.steps.order_by("position"))

    client.post(f"{CHANGELIST}{workflow.pk}/change/", workflow_form(tenants.a, MENU_STEPS, existing))

    assert Workflow.objects.get().version == 1
    assert WorkflowVersion.objects.count() == 1


def test_a_step_deleted_inline_is_gone_and_its_key_free_again(tenants):
    client = client_for(tenants.supervisor)
    client.post(f"{CHANGELIST}add/", workflow_form(tenants.a))
    workflow = Workflow.objects.get()
    existing = list(workflow.steps.order_by("position"))
    steps = [*MENU_STEPS[:3], {**MENU_STEPS[3], "DELETE": True}]
    steps[0] = json.loads(json.dumps(steps[0]))
    steps[0]["settings"]["options"][0]["next"] = "thanks"

    response = client.post(f"{CHANGELIST}{workflow.pk}/change/", workflow_form(tenants.a, steps, existing))

    assert response.status_code == 302, errors_of(response)
    assert list(workflow.steps.values_list("key", flat=True).order_by("position")) == ["menu", "ask_order", "thanks"]
    assert Workflow.objects.get().version == 2


def test_two_steps_may_swap_their_keys(tenants):
    client = client_for(tenants.supervisor)
    client.post(f"{CHANGELIST}add/", workflow_form(tenants.a))
    workflow = Workflow.objects.get()
    existing = list(workflow.steps.order_by("position"))
    steps = json.loads(json.dumps(MENU_STEPS))
    steps[2]["key"], steps[3]["key"] = "to_orders", "thanks"
    steps[1]["next"] = "to_orders"
    steps[0]["settings"]["options"][0]["next"] = "thanks"

    response = client.post(f"{CHANGELIST}{workflow.pk}/change/", workflow_form(tenants.a, steps, existing))

    assert response.status_code == 302, errors_of(response)
    kinds = dict(workflow.steps.values_list("key", "kind"))
    assert kinds["thanks"] == "route" and kinds["to_orders"] == "message"
    assert Workflow.objects.get().version == 2


def test_a_missing_workspace_does_not_bury_the_form_in_team_errors(tenants):
    data = workflow_form(tenants.a) | {"workspace": ""}

    response = client_for(tenants.supervisor).post(f"{CHANGELIST}add/", data)

    assert response.status_code == 200
    assert "no team" not in errors_of(response) and "workspace" in response.context["adminform"].form.errors


def test_the_diagram_of_the_graph_is_on_the_change_page_with_texts_escaped(tenants):
    definition = menu_definition()
    definition["steps"][0]["settings"]["options"][0]["title"] = "Sale <script>alert(1)</script>"
    workflow = workflow_import(workspace=tenants.a, definition=definition)

    response = client_for(tenants.supervisor).get(f"{CHANGELIST}{workflow.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in page and 'class="workflow-diagram"' in page
    for key in ("menu", "ask_order", "thanks", "to_orders"):
        assert f">{key}</text>" in page
    assert "<script>alert(1)</script>" not in page
    assert "Sale &lt;script&gt;" in page
    assert "/try/" in page and "/export/" in page


def test_the_diagram_labels_branches_and_sets_unreachable_steps_apart():
    definition = menu_definition()
    definition["steps"].append({"key": "orphan", "kind": "note", "settings": {"text": "never"}, "next": ""})

    svg = diagram_svg(definition)

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "1. Product questions" in svg and "2. Order status" in svg  # option branches
    assert ">answer<" in svg  # the ask step's way on
    assert "Not reachable from the first step" in svg
    assert "When: conversation opened (channels: whatsapp)" in svg
    assert diagram_svg({"steps": []}).startswith("<svg")
    assert diagram_svg({"steps": [{"key": "a", "kind": "nonsense", "settings": "oops"}]}).startswith("<svg")
    odd = {"steps": [{"key": "a", "kind": "branch", "settings": {"rules": [{"op": 3, "next": "a"}]}}]}
    assert "3" in diagram_svg(odd)
    assert diagram_svg({"steps": [{"key": "a", "kind": "update_contact", "settings": {"set": 5}}]}).startswith("<svg")


def test_export_then_import_twice_replaces_the_workflow_rather_than_duplicating_it(tenants):
    client = client_for(tenants.supervisor)
    original = workflow_import(workspace=tenants.a, definition=menu_definition())
    exported = client.get(f"{CHANGELIST}{original.pk}/export/")
    assert exported.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="support-menu.json"'
    definition = json.loads(exported.content)
    assert definition == menu_definition()
    definition["steps"] = [step for step in definition["steps"] if step["key"] != "to_orders"]
    definition["steps"][0]["settings"]["options"][0]["next"] = "thanks"

    for _ in range(2):
        response = client.post(
            f"{CHANGELIST}import/", {"workspace": tenants.a.pk, "text": json.dumps(definition, ensure_ascii=False)}
        )
        assert response.status_code == 302

    workflow = Workflow.objects.get(workspace=tenants.a)
    assert workflow.pk == original.pk
    assert [s.key for s in workflow.steps.order_by("position")] == ["menu", "ask_order", "thanks"]
    assert workflow.version == 2  # the second identical import published nothing new
    assert definition_of(workflow) == definition


def test_several_workflows_export_as_one_file_that_imports_back(tenants):
    client = client_for(tenants.supervisor)
    workflow_import(workspace=tenants.a, definition=menu_definition())
    workflow_import(
        workspace=tenants.a,
        definition=menu_definition(name="Survey", trigger="conversation_closed", enabled=False),
    )
    ids = list(Workflow.objects.values_list("pk", flat=True))

    exported = client.post(CHANGELIST, {"action": "export_json", "_selected_action": ids})
    Workflow.objects.all().delete()
    upload = _upload("workflows.json", exported.content)
    response = client.post(f"{CHANGELIST}import/", {"workspace": tenants.a.pk, "file": upload})

    assert response.status_code == 302
    assert set(Workflow.objects.values_list("name", "enabled")) == {("Support menu", True), ("Survey", False)}


def _upload(name, content):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{oops", "This is not valid JSON"),
        ('{"name": "X", "trigger": "nope", "steps": []}', '"nope" is not a trigger'),
        (json.dumps(menu_definition(handover_team="Nobody")), 'no team named "Nobody"'),
    ],
)
def test_an_invalid_import_is_a_form_error_and_imports_nothing(tenants, text, message):
    response = client_for(tenants.supervisor).post(f"{CHANGELIST}import/", {"workspace": tenants.a.pk, "text": text})

    assert response.status_code == 200
    assert message in form_errors(response.context["form"])
    assert not Workflow.objects.exists()


def test_import_cannot_target_another_workspace(tenants):
    response = client_for(tenants.supervisor).post(
        f"{CHANGELIST}import/", {"workspace": tenants.b.pk, "text": json.dumps(menu_definition())}
    )

    assert response.status_code == 200
    assert "workspace" in response.context["form"].errors
    assert not Workflow.objects.exists()


def test_another_workspaces_workflow_and_its_pages_answer_404(tenants):
    theirs = workflow_import(
        workspace=tenants.b,
        definition=menu_definition(handover_team="Couriers", steps=MENU_STEPS[1:3], start_step="ask_order"),
    )
    theirs_run = Run.objects.create(
        workspace=tenants.b,
        conversation=_sandbox_conversation(tenants.b),
        workflow=theirs,
        version=theirs.versions.get(),
    )
    client = client_for(tenants.supervisor)

    for suffix in ("change/", "export/", "versions/1/", "try/", "try/state/"):
        assert client.get(f"{CHANGELIST}{theirs.pk}/{suffix}").status_code == 404, suffix
    for suffix in ("try/restart/", "try/send/"):
        assert client.post(f"{CHANGELIST}{theirs.pk}/{suffix}", {"text": "hi"}).status_code == 404, suffix
    assert client.get(f"/admin/workflows/run/{theirs_run.pk}/change/").status_code == 404
    listed = client.get(CHANGELIST)
    assert theirs.pk not in {w.pk for w in listed.context["cl"].queryset}


def test_enable_and_disable_actions(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())
    client = client_for(tenants.supervisor)

    client.post(CHANGELIST, {"action": "disable", "_selected_action": [workflow.pk]})
    assert Workflow.objects.get().enabled is False
    client.post(CHANGELIST, {"action": "enable", "_selected_action": [workflow.pk]})
    assert Workflow.objects.get().enabled is True


def test_the_list_shows_trigger_version_and_a_try_it_link(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())

    page = client_for(tenants.supervisor).get(CHANGELIST).content.decode()

    assert "Support menu" in page and f"{workflow.pk}/try/" in page and "Import JSON" in page


def test_a_published_version_is_readable_as_json(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())

    response = client_for(tenants.supervisor).get(f"{CHANGELIST}{workflow.pk}/versions/1/")

    assert response.status_code == 200 and json.loads(response.content) == menu_definition()


def test_the_run_page_shows_its_log_and_links_the_conversation(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())
    conversation = _sandbox_conversation(tenants.a)
    run = Run.objects.create(
        workspace=tenants.a,
        conversation=conversation,
        workflow=workflow,
        version=workflow.versions.get(),
        step="ask_order",
        variables={"menu": "status"},
    )
    RunLog.objects.create(
        workspace=tenants.a, run=run, workflow=workflow, version=1, step="menu", kind="menu", outcome="chose status"
    )

    response = client_for(tenants.supervisor).get(f"/admin/workflows/run/{run.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "chose status" in page and "&quot;menu&quot;: &quot;status&quot;" in page
    assert f"/admin/conversations/conversation/{conversation.pk}/change/" in page
    runs = client_for(tenants.supervisor).get("/admin/workflows/run/", {"workflow__id__exact": workflow.pk})
    assert runs.status_code == 200 and [r.pk for r in runs.context["cl"].queryset] == [run.pk]


# FAQ and bot settings ------------------------------------------------------------------------


def test_faq_examples_are_edited_one_per_line_and_saved_as_a_list(tenants):
    client = client_for(tenants.supervisor)

    response = client.post(
        "/admin/workflows/faqentry/add/",
        {
            "workspace": tenants.a.pk,
            "intent": "refund_time",
            "language": "en",
            "examples": "When will I get my money back?\r\n\r\n  how long does a refund take  \nrefund status",
            "answer": "Refunds reach your card within 5 to 10 days.",
            "follow_up": "on",
        },
    )

    assert response.status_code == 302
    entry = FaqEntry.objects.get()
    assert entry.examples == ["When will I get my money back?", "how long does a refund take", "refund status"]
    page = client.get(f"/admin/workflows/faqentry/{entry.pk}/change/").content.decode()
    assert "When will I get my money back?\nhow long does a refund take\nrefund status" in page


def test_faq_needs_at_least_one_example(tenants):
    response = client_for(tenants.supervisor).post(
        "/admin/workflows/faqentry/add/",
        {"workspace": tenants.a.pk, "intent": "x", "language": "en", "examples": " \n ", "answer": "A"},
    )

    assert response.status_code == 200 and "examples" in response.context["adminform"].form.errors


def test_bot_settings_are_one_per_workspace_and_take_teams_of_their_own_workspace(tenants):
    client = client_for(tenants.supervisor)
    data = {
        "workspace": tenants.a.pk,
        "faq_threshold": "0.6",
        "human_keywords": '{"en": ["operator"], "ru": ["оператор"]}',
        "handover_text": '{"en": "One moment."}',
        "fallback_team": tenants.team_b.pk,
        "csat_alert_below": "2",
    }

    refused = client.post("/admin/workflows/botsettings/add/", data)
    saved = client.post("/admin/workflows/botsettings/add/", {**data, "fallback_team": tenants.team_a.pk})

    assert refused.status_code == 200 and "fallback_team" in refused.context["adminform"].form.errors
    assert saved.status_code == 302
    settings = BotSettings.objects.get(workspace=tenants.a)
    assert settings.human_keywords == {"en": ["operator"], "ru": ["оператор"]}
    assert client.get("/admin/workflows/botsettings/add/").status_code == 403  # already has one


# The definition, unit by unit ----------------------------------------------------------------


def test_a_valid_definition_has_no_errors(tenants):
    assert definition_errors(menu_definition(), workspace=tenants.a) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start_step": "nope"}, 'start_step: no step has the key "nope"'),
        ({"handover_team": "Couriers"}, 'handover_team: the workspace has no team named "Couriers"'),
        ({"trigger": "schedule", "trigger_settings": {}}, '"every_minutes": 60 or "daily_at"'),
        ({"trigger": "message", "trigger_settings": {"channels": ["fax"]}}, '"fax" is not a channel kind'),
        ({"trigger_settings": {"channel": ["whatsapp"]}}, "trigger settings, channel: a conversation_opened"),
        ({"steps": []}, "steps: required"),
        ({"colour": "red"}, "colour: not part of a workflow definition"),
        ({"max_steps": 0}, "max_steps: must be at least 1"),
    ],
)
def test_definition_errors_at_the_top_level(tenants, change, message):
    errors = definition_errors(menu_definition(**change), workspace=tenants.a)

    assert any(message in error for error in errors), errors


def test_definition_errors_name_the_step_and_the_field(tenants):
    definition = menu_definition()
    definition["steps"] += [
        {"key": "thanks", "kind": "message", "settings": {"text": "again"}},
        {"key": "Bad key!", "kind": "message", "settings": {"text": "x"}},
        {"key": "chain", "kind": "start_workflow", "settings": {"workflow": "Survey"}},
        {"key": "odd", "kind": "teleport", "settings": {}},
        {"key": "greet", "kind": "message", "settings": {"text": "Hi {{contat.name}}"}, "next": "void"},
    ]

    errors = definition_errors(definition, workspace=tenants.a)

    assert 'step #5: two steps have the key "thanks".' in errors
    assert "step #6: key: required, at most 40 letters, digits, - or _." in errors
    assert 'step "chain": workflow: the workspace has no workflow named "Survey".' in errors
    assert any(e.startswith('step "odd": kind: "teleport" is not a kind of step') for e in errors)
    assert any(e.startswith('step "greet": text: {{contat.name}} is not a variable') for e in errors)
    assert 'step "greet" next: no step has the key "void".' in errors
    chained = definition | {"steps": [*definition["steps"][:4], definition["steps"][6]]}
    assert definition_errors(chained, workspace=tenants.a, also_named={"Survey"}) == []


KEYS = {"menu", "next_one", "help"}


@pytest.mark.parametrize(
    ("kind", "step_settings", "message"),
    [
        ("menu", {"options": [{"id": "a", "title": "A"}]}, "text: required"),
        ("menu", {"text": {"english": "Hi"}, "options": [{"id": "a", "title": "A"}]}, '"english" is not a language'),
        ("menu", {"text": "Hi", "options": [{"id": "x" * 65, "title": "A"}]}, "longer than 64"),
        ("menu", {"text": "Hi", "options": [{"id": "a", "title": ""}]}, "title: is empty"),
        ("menu", {"text": "Hi", "options": [{"id": "a", "title": "A"}], "retries": "2"}, "retries: must be a whole"),
        ("menu", {"text": "Hi", "options": [{"id": "a", "title": "A"}], "timeout": "help"}, "set timeout_minutes"),
        ("ask", {"text": "Phone?", "input": "fax", "save_as": "p"}, "input: must be one of text, phone"),
        ("ask", {"text": "Phone?", "input": "phone", "save_as": "my var"}, "save_as: must be a variable name"),
        ("branch", {"rules": [{"if": "vars.x", "op": "like", "value": 1, "next": "menu"}]}, "op: must be one of"),
        ("branch", {"rules": [{"if": "mood", "op": "equals", "value": 1, "next": "menu"}]}, '"mood" is not something'),
        ("branch", {"rules": [{"if": "time", "op": "gt", "value": "9am", "next": "menu"}]}, "time of day"),
        ("branch", {"rules": [{"if": "vars.x", "op": "between", "value": [1], "next": "menu"}]}, "two values"),
        ("branch", {"rules": [{"if": "vars.x", "op": "in", "value": "a", "next": "menu"}]}, "must be a list"),
        ("branch", {"rules": [{"if": "vars.x", "op": "exists"}]}, "next: choose the step"),
        ("branch", {"rules": [{"if": "weekday", "op": "equals", "value": "funday", "next": "menu"}]}, "weekday"),
        ("route", {"team": "Orders", "strategy": "random"}, "strategy: must be one of round_robin, least_open"),
        ("route", {"team": "Orders", "assigned": "elsewhere"}, 'assigned: no step has the key "elsewhere"'),
        ("hours", {"open": "menu"}, "closed: required"),
        ("http", {"method": "FETCH", "url": "https://x.example"}, "method: must be one of GET"),
        ("http", {"method": "GET", "url": "ftp://x.example"}, "url: must start with https://"),
        ("http", {"method": "GET", "url": "https://x.example", "map": {"a b": "x"}}, "must be a variable name"),
        ("notify", {"via": "slack", "text": "Escalated"}, "url: required to notify via slack"),
        ("notify", {"via": "email", "text": "Escalated", "to": "nobody"}, "to: must be an email address"),
        ("set_language", {}, 'either "language": "en" or "from"'),
        ("update_contact", {"set": {"shoe_size": "42"}}, 'cannot set "shoe_size"'),
        ("wait", {"minutes": 0}, "minutes: must be at least 1"),
        ("jump", {"to": ""}, "to: choose the step to go to"),
        ("message", {"text": "Hi", "colour": "red"}, "colour: not a setting of a message step"),
        ("message", {"text": "Hi {{vars.name"}, "not closed"),
    ],
)
def test_step_settings_errors_say_what_is_wrong_with_which_field(kind, step_settings, message):
    errors = step_settings_errors(kind, step_settings, KEYS)

    assert any(message in error for error in errors), errors


@pytest.mark.parametrize(
    ("kind", "step_settings"),
    [
        ("message", {"text": {"en": "Hi", "zh-hant": "你好"}, "options": [{"id": "a", "title": "A"}]}),
        ("menu", {"text": "Hi", "options": [{"id": 1, "title": "A", "keywords": {"ru": ["да"]}, "next": "help"}]}),
        ("branch", {"rules": [{"if": "time", "op": "between", "value": ["09:00", "18:00"], "next": "help"}]}),
        ("branch", {"rules": [{"if": "contact.tags", "op": "contains", "value": "vip", "next": "help"}], "else": ""}),
        ("http", {"method": "POST", "url": "https://x.example/{{vars.id}}", "body": {"n": "{{order.number}}"}}),
        ("csat", {"comment_text": False}),
        ("order_lookup", {"from": "vars.order_number", "found": "help", "not_found": "menu"}),
        ("faq", {"threshold": 0.4, "not_matched": "menu"}),
    ],
)
def test_good_step_settings_pass(kind, step_settings):
    assert step_settings_errors(kind, step_settings, KEYS) == []


def test_import_raises_a_domain_error_listing_every_mistake(tenants):
    with pytest.raises(DomainError) as raised:
        workflow_import(workspace=tenants.a, definition=menu_definition(start_step="x", max_steps=-1))

    assert raised.value.code == "invalid_workflow"
    assert len(raised.value.fields["definition"]) == 2


def test_publishing_twice_at_once_is_serialised_by_the_workflow_lock(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())
    Step.objects.filter(workflow=workflow, key="thanks").update(settings={"text": "Changed"})

    version = workflow_publish(workflow=workflow)

    assert version.number == workflow.version == 2
    assert list(workflow.versions.values_list("number", flat=True)) == [2, 1]


# The sandbox channel and the try-it page ------------------------------------------------------


def test_the_sandbox_connector_sends_nothing_anywhere_and_takes_no_webhooks(tenants):
    channel = sandbox_channel(workspace=tenants.a)
    connector = connector_for(channel)

    result = connector.send(channel, OutboundMessage(recipient_id="tryit-1", kind="text", text="Hi"))

    assert result.provider_id.startswith("sandbox-")
    assert connector.verify(channel, b"{}", {}) is False
    assert connector.numbered_menus is False
    assert sandbox_channel(workspace=tenants.a) == channel  # one per workspace
    assert channel.kind == ChannelKind.SANDBOX


def said(state: dict) -> list[tuple[str, str]]:
    """What the customer and the bot said, in order (the timeline's system events aside)."""
    return [(m["sender_kind"], m["text"]) for m in state["messages"] if m["kind"] not in ("event", "note")]


def test_try_it_plays_the_workflow_in_a_test_conversation(tenants):
    pytest.importorskip("apps.workflows.services")
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())
    client = client_for(tenants.supervisor)
    base = f"{CHANGELIST}{workflow.pk}/try/"

    page = client.get(base)
    restarted = client.post(f"{base}restart/")
    after = restarted.json()["after"]
    shown = client.get(f"{base}state/", {"after": after}).json()

    assert page.status_code == 200 and "Try-it" in page.content.decode()
    assert restarted.status_code == 200
    assert said(shown) == [("bot", f"Hi {tenants.supervisor.username}! How can we help?")]
    menu = next(m for m in shown["messages"] if m["sender_kind"] == "bot")
    assert menu["direction"] == "out" and [o["id"] for o in menu["options"]] == ["products", "status"]
    assert shown["run"]["workflow"] == "Support menu" and shown["run"]["step"] == "menu"

    assert client.post(f"{base}send/", {"option": "status"}).status_code == 200
    after_tap = client.get(f"{base}state/", {"after": after}).json()
    assert said(after_tap)[1:] == [("contact", "Order status"), ("bot", "Your order number?")]
    assert after_tap["run"]["step"] == "ask_order"

    client.post(f"{base}send/", {"text": "A-10042"})
    answered = client.get(f"{base}state/", {"after": after}).json()
    assert said(answered)[-1] == ("bot", "Thanks! Order A-10042.")
    assert answered["run"]["variables"]["order_number"] == "A-10042"
    assert [line["step"] for line in answered["run"]["log"]][:2] == ["menu", "menu"]

    conversation = Conversation.objects.get(pk=answered["conversation"]["id"])
    assert conversation.channel.kind == "sandbox"
    assert conversation.contact.name == f"{tenants.supervisor.username} (try-it)"
    assert Channel.objects.filter(workspace=tenants.a, kind="sandbox").count() == 1
    tapped = Message.objects.get(conversation=conversation, direction="in", kind="interactive")
    assert tapped.payload["reply_id"] == "status"


def test_try_it_restart_starts_over_on_the_same_test_conversation(tenants):
    pytest.importorskip("apps.workflows.services")
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())
    client = client_for(tenants.supervisor)
    base = f"{CHANGELIST}{workflow.pk}/try/"
    client.post(f"{base}restart/")
    client.post(f"{base}send/", {"option": "status"})

    again = client.post(f"{base}restart/").json()
    shown = client.get(f"{base}state/", {"after": again["after"]}).json()

    assert said(shown) == [("bot", f"Hi {tenants.supervisor.username}! How can we help?")]
    runs = Run.objects.filter(workflow=workflow).order_by("started_at")
    assert [run.state for run in runs] == ["cancelled", "waiting"]
    assert Conversation.objects.filter(channel__kind="sandbox").count() == 1
    assert client.get(base).context["after"] == again["after"]  # a reload shows the same session


def test_each_supervisor_plays_in_their_own_test_conversation(tenants):
    pytest.importorskip("apps.workflows.services")
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())

    for user in (tenants.supervisor, tenants.owner):
        client_for(user).post(f"{CHANGELIST}{workflow.pk}/try/restart/")

    names = set(Conversation.objects.filter(channel__kind="sandbox").values_list("contact__name", flat=True))
    assert names == {f"{tenants.supervisor.username} (try-it)", f"{tenants.owner.username} (try-it)"}


def test_try_it_refuses_an_empty_message(tenants):
    workflow = workflow_import(workspace=tenants.a, definition=menu_definition())

    response = client_for(tenants.supervisor).post(f"{CHANGELIST}{workflow.pk}/try/send/", {"text": "  "})

    assert response.status_code == 400 and response.json()["code"] == "empty_message"
