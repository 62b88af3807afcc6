"""The workflow definition: the JSON a workflow is imported from, exported to, and published as
(`WorkflowVersion.definition`, what runs follow). The shape is in notes/issue7-brief.md and
docs/workflows.md:

    {"name", "description", "enabled", "trigger", "trigger_settings", "priority", "start_step",
     "max_steps", "handover_team" (a team's name or null), "steps": [{"key", "kind", "settings", "next"}]}

Checking is plain Python over that shape, so the admin's forms, the import page and the API say
the same thing about the same mistake. Every message names the field it is about, in words a
supervisor can act on without reading code."""

import re
from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.db.models import F

from apps.core.exceptions import DomainError
from apps.workflows.models import Step, StepKind, Trigger, Workflow, WorkflowVersion

KEY = re.compile(r"[-a-zA-Z0-9_]{1,40}")  # Step.key is a SlugField(max_length=40)
VARIABLE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*", re.IGNORECASE)
TEMPLATE_TAG = re.compile(r"\{\{(.*?)\}\}")
TEMPLATE_VARIABLE = re.compile(r"\s*([\w.\-]+)\s*")  # what apps/workflows/templating.py fills
TEMPLATE_ROOTS = ("contact", "vars", "order", "queue", "team", "agent", "workspace", "conversation", "language")
CLOCK = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Telegram's callback_data is 64 bytes; an id that long still fits every channel's button.
OPTION_ID_MAX = 64
TOP_LEVEL = {
    "name",
    "description",
    "enabled",
    "trigger",
    "trigger_settings",
    "priority",
    "start_step",
    "max_steps",
    "handover_team",
    "steps",
}
STEP_FIELDS = {"key", "kind", "settings", "next"}


class Problems:
    """Collects messages, each prefixed with where the mistake is."""

    def __init__(self, keys: Iterable[str] = ()):
        self.keys = set(keys)
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}" if where else message)


Check = Callable[[Problems, str, Any], None]


# Value checks: each takes (problems, where, value) and adds what is wrong -------------------


def template(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str):
        problems.add(where, "must be a text.")
        return
    for tag in TEMPLATE_TAG.findall(value):
        found = TEMPLATE_VARIABLE.fullmatch(tag)
        if not found or found.group(1).split(".")[0] not in TEMPLATE_ROOTS:
            roots = ", ".join(f"{root}." for root in TEMPLATE_ROOTS)
            problems.add(where, f"{{{{{tag.strip()}}}}} is not a variable Parley knows (they start with {roots}).")
    if value.count("{{") != len(TEMPLATE_TAG.findall(value)):
        problems.add(where, "a '{{' is not closed with '}}'.")


def text(problems: Problems, where: str, value: Any) -> None:
    """A localised text: "Hello" or {"en": "Hello", "ru": "Здравствуйте"}."""
    if isinstance(value, str):
        if not value.strip():
            problems.add(where, "is empty.")
        template(problems, where, value)
        return
    if not isinstance(value, dict) or not value:
        problems.add(where, 'must be a text, or one per language like {"en": "Hello", "ru": "Здравствуйте"}.')
        return
    for language, variant in value.items():
        if not LANGUAGE.fullmatch(str(language)):
            problems.add(where, f'"{language}" is not a language code (en, ru, zh-hant...).')
        if not isinstance(variant, str) or not variant.strip():
            problems.add(where, f'the "{language}" text is empty or not a text.')
        else:
            template(problems, f"{where} ({language})", variant)


def step_key(problems: Problems, where: str, value: Any) -> None:
    """Another step's key; "" means "the step's `then`"."""
    if not isinstance(value, str):
        problems.add(where, "must be a step key.")
    elif value and value not in problems.keys:
        problems.add(where, f'no step has the key "{value}".')


def required_step_key(problems: Problems, where: str, value: Any) -> None:
    if value in ("", None):
        problems.add(where, "choose the step to go to.")
    else:
        step_key(problems, where, value)


def language_code(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not LANGUAGE.fullmatch(value):
        problems.add(where, "must be a language code such as en, ru or zh-hant.")


def text_or_off(problems: Problems, where: str, value: Any) -> None:
    """A text, or false to leave it out (a survey without the comment question)."""
    if value is not False:
        text(problems, where, value)


def variable(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not VARIABLE_NAME.fullmatch(value):
        problems.add(where, "must be a variable name: letters, digits and _ (e.g. order_number).")


def name(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.add(where, "must be a non-empty text.")


def plain(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str):
        problems.add(where, "must be a text.")


def names(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, list) or any(not isinstance(item, str) or not item.strip() for item in value):
        problems.add(where, 'must be a list of texts, e.g. ["vip", "wholesale"].')


def boolean(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, bool):
        problems.add(where, "must be true or false.")


def whole(minimum: int = 0, maximum: int | None = None) -> Check:
    def check(problems: Problems, where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(where, "must be a whole number.")
        elif value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            problems.add(where, f"must be at least {minimum}{upper}.")

    return check


def number(minimum: float, maximum: float) -> Check:
    def check(problems: Problems, where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.add(where, "must be a number.")
        elif not minimum <= value <= maximum:
            problems.add(where, f"must be between {minimum} and {maximum}.")

    return check


def one_of(*choices: str) -> Check:
    def check(problems: Problems, where: str, value: Any) -> None:
        if value not in choices:
            problems.add(where, f"must be one of {', '.join(choices)}.")

    return check


def regex(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        problems.add(where, "must be a regular expression.")
        return
    try:
        re.compile(value)
    except re.error as error:
        problems.add(where, f"is not a valid regular expression ({error}).")


def clock(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not CLOCK.fullmatch(value):
        problems.add(where, 'must be a time of day like "09:00".')


def reference(*exact: str, prefixes: tuple[str, ...] = ("vars.",)) -> Check:
    """Where a step reads a value: "vars.<name>" (or one of `exact`)."""

    def check(problems: Problems, where: str, value: Any) -> None:
        if value in exact:
            return
        ok = isinstance(value, str) and any(
            value.startswith(prefix) and VARIABLE_NAME.fullmatch(value[len(prefix) :]) for prefix in prefixes
        )
        if not ok:
            allowed = [f'"{item}"' for item in exact] + [f'"{prefix}<name>"' for prefix in prefixes]
            problems.add(where, f"must be {' or '.join(allowed)}.")

    return check


def url(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.add(where, "must be an address like https://shop.example/api/orders/{{vars.order_number}}.")
        return
    if not value.startswith(("https://", "http://", "{{")):
        problems.add(where, "must start with https:// (or http://).")
    template(problems, where, value)


def email(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        problems.add(where, "must be an email address.")


def templates_inside(problems: Problems, where: str, value: Any) -> None:
    """Any JSON; the texts inside it may use variables."""
    if isinstance(value, str):
        template(problems, where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            templates_inside(problems, f"{where}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value, 1):
            templates_inside(problems, f"{where} #{index}", item)


def headers(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, dict):
        problems.add(where, 'must be an object like {"Authorization": "Bearer ..."}.')
        return
    for header, item in value.items():
        if not re.fullmatch(r"[A-Za-z0-9-]+", str(header)):
            problems.add(where, f'"{header}" is not a header name.')
        template(problems, f"{where}.{header}", item)


def response_map(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, dict):
        problems.add(where, 'must be an object like {"status": "order.status"}: variable → path in the answer.')
        return
    for var, path in value.items():
        variable(problems, f"{where} ({var})", var)
        if not isinstance(path, str) or not path.strip():
            problems.add(where, f'"{var}" needs a dotted path in the JSON answer, e.g. "order.status".')


def keywords(problems: Problems, where: str, value: Any) -> None:
    if isinstance(value, dict):
        for language, words in value.items():
            if not LANGUAGE.fullmatch(str(language)):
                problems.add(where, f'"{language}" is not a language code.')
            names(problems, f"{where} ({language})", words)
        return
    names(problems, where, value)


CONTACT_FIELDS = ("name", "email", "phone", "language", "lifecycle", "country")


def contact_changes(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, dict) or not value:
        problems.add(where, 'must be an object like {"name": "{{vars.name}}", "fields.size": "XL"}.')
        return
    for field, item in value.items():
        known = field in CONTACT_FIELDS[:5] or re.fullmatch(r"fields\.[\w-]+", str(field))
        if not known:
            problems.add(where, f'cannot set "{field}": use name, email, phone, language, lifecycle or fields.<key>.')
        template(problems, f"{where}.{field}", item)


# Option lists and branch rules --------------------------------------------------------------

OPTION_FIELDS = {"id", "title", "description"}
MENU_OPTION_FIELDS = {*OPTION_FIELDS, "keywords", "next"}


def _option_list(problems: Problems, where: str, value: Any, *, menu: bool) -> None:
    if not isinstance(value, list) or not value:
        problems.add(where, 'must list at least one option, e.g. [{"id": "orders", "title": "My order"}].')
        return
    allowed, seen = (MENU_OPTION_FIELDS if menu else OPTION_FIELDS), set()
    for index, option in enumerate(value, 1):
        at = f"{where} #{index}"
        if not isinstance(option, dict):
            problems.add(at, 'must be an object like {"id": "orders", "title": "My order"}.')
            continue
        for unknown in sorted(set(option) - allowed):
            problems.add(at, f'"{unknown}" is not an option setting (use {", ".join(sorted(allowed))}).')
        option_id = option.get("id")
        if not isinstance(option_id, str | int) or isinstance(option_id, bool) or not str(option_id).strip():
            problems.add(at, "needs an id.")
        elif len(str(option_id)) > OPTION_ID_MAX:
            problems.add(at, f"id is longer than {OPTION_ID_MAX} characters.")
        elif str(option_id) in seen:
            problems.add(at, f'two options have the id "{option_id}".')
        else:
            seen.add(str(option_id))
        if "title" not in option:
            problems.add(at, "needs a title.")
        else:
            text(problems, f"{at} title", option["title"])
        if "description" in option:
            text(problems, f"{at} description", option["description"])
        if menu and "keywords" in option:
            keywords(problems, f"{at} keywords", option["keywords"])
        if menu and "next" in option:
            step_key(problems, f"{at} next", option["next"])


def message_options(problems: Problems, where: str, value: Any) -> None:
    _option_list(problems, where, value, menu=False)


def menu_options(problems: Problems, where: str, value: Any) -> None:
    _option_list(problems, where, value, menu=True)


OPS = ("equals", "not_equals", "in", "not_in", "contains", "exists", "matches", "gt", "lt", "between")
SPECIAL_SUBJECTS = ("contact.tags", "channel", "language", "time", "weekday", "workspace.open")
SUBJECT = re.compile(
    r"vars\.[A-Za-z_][\w.]*|contact\.(name|email|phone|language|lifecycle|country)|contact\.fields\.[\w-]+"
    r"|(order|conversation|team|queue|agent|workspace)\.[\w.]+"
)


def _rule_value(problems: Problems, where: str, rule: dict) -> None:
    op, subject, value = rule.get("op"), rule.get("if"), rule.get("value")
    if op == "exists":
        if "value" in rule and not isinstance(value, bool):
            problems.add(where, 'with "exists", value is true (is set) or false (is empty), or left out.')
        return
    if "value" not in rule:
        problems.add(where, f'"{op}" needs a value.')
        return
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            problems.add(where, f'with "{op}", value must be a list, e.g. ["en", "ru"].')
            return
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            problems.add(where, 'with "between", value must be two values, e.g. ["09:00", "18:00"].')
            return
    elif op == "matches":
        regex(problems, f"{where} value", value)
        return
    elif isinstance(value, dict | list):
        problems.add(where, f'with "{op}", value must be a single text or number.')
        return
    values = value if isinstance(value, list) else [value]
    if subject == "time":
        for item in values:
            clock(problems, f"{where} value", item)
    elif subject == "weekday":
        for item in values:
            if item not in WEEKDAYS:
                problems.add(f"{where} value", f'"{item}" is not a weekday (mon, tue, wed, thu, fri, sat, sun).')


def rules(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        problems.add(
            where,
            'must list at least one rule, e.g. [{"if": "language", "op": "equals", "value": "ru", '
            '"next": "menu_ru"}].',
        )
        return
    for index, rule in enumerate(value, 1):
        at = f"{where} #{index}"
        if not isinstance(rule, dict):
            problems.add(at, 'must be an object like {"if": "channel", "op": "equals", "value": "whatsapp", ...}.')
            continue
        for unknown in sorted(set(rule) - {"if", "op", "value", "next"}):
            problems.add(at, f'"{unknown}" is not a rule setting (use if, op, value, next).')
        subject = rule.get("if")
        if not isinstance(subject, str) or not (subject in SPECIAL_SUBJECTS or SUBJECT.fullmatch(subject)):
            problems.add(
                f"{at} if",
                f'"{subject}" is not something to test: use vars.<name>, contact.<name|email|phone|language|'
                "lifecycle|country>, contact.fields.<key>, contact.tags, channel, language, time, weekday "
                "or workspace.open.",
            )
        if rule.get("op") not in OPS:
            problems.add(f"{at} op", f"must be one of {', '.join(OPS)}.")
        else:
            _rule_value(problems, at, rule)
        required_step_key(problems, f"{at} next", rule.get("next"))


# What each kind of step takes ----------------------------------------------------------------

TEXT_HINT = 'a text, or one per language: {"en": "...", "ru": "..."}'
TIMER = {"timeout_minutes": whole(1, 60 * 24 * 30), "timeout": step_key}
QUESTION = {
    "button": text,
    "retries": whole(0, 10),
    "invalid_text": text,
    "fallback": step_key,
    **TIMER,
}
INPUTS = ("text", "phone", "email", "number", "date", "order_number", "order_or_phone")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# kind → (settings it takes with their checks, the ones it requires)
SPECS: dict[str, tuple[dict[str, Check], set[str]]] = {
    StepKind.MESSAGE: (
        {
            "text": text,
            "options": message_options,
            "button": text,
            "media_url": url,
            "filename": plain,
            "mime_type": plain,
        },
        set(),
    ),
    StepKind.MENU: (
        {"text": text, "options": menu_options, "save_as": variable, **QUESTION},
        {"text", "options"},
    ),
    StepKind.ASK: (
        {"text": text, "input": one_of(*INPUTS), "save_as": variable, "pattern": regex, **QUESTION},
        {"text", "input", "save_as"},
    ),
    StepKind.BRANCH: ({"rules": rules, "else": step_key}, {"rules"}),
    StepKind.SET_LANGUAGE: ({"language": language_code, "from": reference()}, set()),
    StepKind.UPDATE_CONTACT: (
        {
            "set": contact_changes,
            "add_tags": names,
            "remove_tags": names,
            "conversation_tags": names,
            "priority": one_of("low", "normal", "high", "urgent"),
            "category": plain,
        },
        set(),
    ),
    StepKind.ROUTE: (
        {
            "team": name,
            "strategy": one_of("round_robin", "least_open"),
            "online_only": boolean,
            "respect_capacity": boolean,
            "text_assigned": text,
            "text_queued": text,
            "text_busy": text,
            "text_closed": text,
            "assigned": step_key,
            "queued": step_key,
            "closed": step_key,
        },
        {"team"},
    ),
    StepKind.HOURS: ({"team": name, "open": required_step_key, "closed": required_step_key}, {"open", "closed"}),
    StepKind.FAQ: (
        {
            "threshold": number(0, 1),
            "matched": step_key,
            "not_matched": step_key,
            "follow_up_text": text,
            "helped": step_key,
            "not_helped": step_key,
            "timeout_minutes": whole(1, 60 * 24 * 30),
        },
        set(),
    ),
    StepKind.ORDER_LOOKUP: (
        {"from": reference("contact"), "found": step_key, "not_found": step_key},
        set(),
    ),
    StepKind.HTTP: (
        {
            "method": one_of(*METHODS),
            "url": url,
            "headers": headers,
            "body": templates_inside,
            "timeout_seconds": number(1, 30),
            "map": response_map,
            "failure": step_key,
        },
        {"method", "url"},
    ),
    StepKind.NOTE: ({"text": template}, {"text"}),
    StepKind.NOTIFY: (
        {
            "via": one_of("slack", "email", "webhook"),
            "url": url,
            "to": email,
            "text": text,
            "wait_for_reply": boolean,
            "timeout_seconds": number(1, 30),
            "failure": step_key,
            **TIMER,
        },
        {"via", "text"},
    ),
    StepKind.CLOSE: ({"category": plain, "summary": template}, set()),
    StepKind.WAIT: ({"minutes": whole(1, 60 * 24 * 30)}, {"minutes"}),
    StepKind.JUMP: ({"to": required_step_key}, {"to"}),
    StepKind.START_WORKFLOW: ({"workflow": name}, {"workflow"}),
    StepKind.HANDOVER: ({"team": name, "text": text, "note": template}, set()),
    StepKind.CSAT: (
        {
            "text": text,
            "comment_text": text_or_off,
            "thanks_text": text,
            "timeout_minutes": whole(1, 60 * 24 * 30),
            "comment_minutes": whole(1, 60 * 24 * 30),
        },
        set(),
    ),
}


def _kind_rules(kind: str, settings: dict, problems: Problems) -> None:
    """What a kind needs beyond its fields one by one."""
    if kind == StepKind.MESSAGE and "text" not in settings and "media_url" not in settings:
        problems.add("text", f"required: {TEXT_HINT}.")
    if kind == StepKind.SET_LANGUAGE and ("language" in settings) == ("from" in settings):
        problems.add("language", 'give either "language": "en" or "from": "vars.<name>".')
    if kind == StepKind.NOTIFY:
        if settings.get("via") in ("slack", "webhook") and "url" not in settings:
            problems.add("url", f"required to notify via {settings['via']}.")
        if settings.get("via") == "email" and "to" not in settings:
            problems.add("to", "required to notify via email.")
    if "timeout" in settings and settings.get("timeout") and "timeout_minutes" not in settings:
        problems.add("timeout", "set timeout_minutes too: how long to wait before taking this branch.")


def step_settings_errors(kind: str, settings: dict, keys: set[str]) -> list[str]:
    """What is wrong with one step's settings; `keys` are the workflow's step keys."""
    if kind not in SPECS:
        return [f'kind: "{kind}" is not a kind of step (use {", ".join(StepKind.values)}).']
    if not isinstance(settings, dict):
        return ["settings must be a JSON object, e.g. {}."]
    fields, required = SPECS[kind]
    problems = Problems(keys)
    for missing in sorted(required - set(settings)):
        hint = f": {TEXT_HINT}" if fields[missing] is text else ""
        problems.add(missing, f"required{hint}.")
    for field, value in settings.items():
        check = fields.get(field)
        if check is None:
            problems.add(field, f"not a setting of a {kind} step (it takes {', '.join(fields)}).")
        else:
            check(problems, field, value)
    _kind_rules(kind, settings, problems)
    return problems.messages


def step_names_errors(kind: str, settings: dict, *, teams: set[str], workflows: set[str]) -> list[str]:
    """Team and workflow names a step uses that the workspace does not have."""
    if not isinstance(settings, dict):
        return []
    errors = []
    team = settings.get("team")
    named_team = kind in (StepKind.ROUTE, StepKind.HOURS, StepKind.HANDOVER) and isinstance(team, str) and team
    if named_team and team not in teams:
        errors.append(f'team: the workspace has no team named "{team}".')
    workflow = settings.get("workflow")
    if kind == StepKind.START_WORKFLOW and isinstance(workflow, str) and workflow and workflow not in workflows:
        errors.append(f'workflow: the workspace has no workflow named "{workflow}".')
    return errors


def workspace_names(workspace) -> tuple[set[str], set[str]]:
    """The names of the workspace's teams and workflows, which definitions refer to."""
    from apps.workspaces.models import Team

    teams = set(Team.objects.filter(workspace=workspace).values_list("name", flat=True))
    workflows = set(Workflow.objects.filter(workspace=workspace).values_list("name", flat=True))
    return teams, workflows


# Triggers ------------------------------------------------------------------------------------


def _channels(workspace) -> Check:
    def check(problems: Problems, where: str, value: Any) -> None:
        from apps.connectors.models import Channel, ChannelKind

        if not isinstance(value, list):
            problems.add(where, 'must be a list of channel kinds or ids, e.g. ["whatsapp", "telegram"].')
            return
        ids = []
        for item in value:
            if (isinstance(item, int) and not isinstance(item, bool)) or (isinstance(item, str) and item.isdigit()):
                ids.append(int(item))
            elif item not in ChannelKind.values:
                problems.add(where, f'"{item}" is not a channel kind ({", ".join(ChannelKind.values)}) or id.')
        if ids and workspace is not None:
            known = set(Channel.objects.filter(workspace=workspace, pk__in=ids).values_list("pk", flat=True))
            for missing in sorted(set(ids) - known):
                problems.add(where, f"the workspace has no channel {missing}.")

    return check


def trigger_settings_errors(trigger: str, settings: Any, *, workspace=None) -> list[str]:
    """What is wrong with a trigger's settings (channel ids are checked against `workspace`)."""
    if trigger not in Trigger.values:
        return [f'trigger: "{trigger}" is not a trigger (use {", ".join(Trigger.values)}).']
    if not isinstance(settings, dict):
        return ["trigger settings: must be a JSON object, e.g. {}."]
    channels = _channels(workspace)
    fields, required = {
        Trigger.CONVERSATION_OPENED: ({}, set()),
        Trigger.MESSAGE: ({"keywords": names, "intent": name}, set()),
        Trigger.CONVERSATION_CLOSED: ({}, set()),
        Trigger.TAG_ADDED: ({"tag": name}, {"tag"}),
        Trigger.ORDER_EVENT: ({"statuses": names}, {"statuses"}),
        Trigger.SHORTCUT: ({"shortcut": name}, {"shortcut"}),
        Trigger.API: ({}, set()),
        Trigger.SCHEDULE: (
            {
                "every_minutes": whole(1, 60 * 24 * 7),
                "daily_at": clock,
                "status": one_of("pending", "open"),
                "tag": name,
                "idle_minutes": whole(0),
            },
            set(),
        ),
    }[trigger]
    fields = {**fields, "channels": channels}  # every trigger may be limited to some channels
    problems = Problems()
    for missing in sorted(required - set(settings)):
        problems.add(f"trigger settings, {missing}", "required.")
    for field, value in settings.items():
        if field not in fields:
            takes = ", ".join(fields) or "nothing"
            problems.add(f"trigger settings, {field}", f"a {trigger} trigger does not take it (it takes {takes}).")
        else:
            fields[field](problems, f"trigger settings, {field}", value)
    if trigger == Trigger.MESSAGE and not settings.get("keywords") and not settings.get("intent"):
        problems.add("trigger settings", 'a message trigger needs "keywords" or an "intent".')
    if trigger == Trigger.ORDER_EVENT and settings.get("statuses") == []:
        problems.add("trigger settings, statuses", "name at least one order status.")
    if trigger == Trigger.SCHEDULE and ("every_minutes" in settings) == ("daily_at" in settings):
        problems.add("trigger settings", 'give either "every_minutes": 60 or "daily_at": "09:00".')
    return problems.messages


# The whole definition ------------------------------------------------------------------------


def _top_level_errors(definition: dict, problems: Problems, teams: set[str], workspace) -> None:
    for unknown in sorted(set(definition) - TOP_LEVEL):
        problems.add(unknown, f"not part of a workflow definition (use {', '.join(sorted(TOP_LEVEL))}).")
    workflow_name = definition.get("name")
    if not isinstance(workflow_name, str) or not workflow_name.strip() or len(workflow_name) > 120:
        problems.add("name", "required: a text of at most 120 characters.")
    checks = {
        "description": plain,
        "enabled": boolean,
        "priority": whole(0, 32767),
        "max_steps": whole(1, 1000),
    }
    for field, check in checks.items():
        if field in definition:
            check(problems, field, definition[field])
    if "trigger" not in definition:
        problems.add("trigger", f"required (one of {', '.join(Trigger.values)}).")
    else:
        problems.messages += trigger_settings_errors(
            definition["trigger"], definition.get("trigger_settings", {}), workspace=workspace
        )
    team = definition.get("handover_team")
    if team is not None and (not isinstance(team, str) or (team and team not in teams)):
        problems.add("handover_team", f'the workspace has no team named "{team}".')


def _step_list_errors(steps: Any, problems: Problems) -> list[dict]:
    """The well-formed steps; what is wrong with the list itself goes to `problems`."""
    if not isinstance(steps, list) or not steps:
        problems.add("steps", "required: a list of at least one step.")
        return []
    good, seen = [], set()
    for index, step in enumerate(steps, 1):
        at = f"step #{index}"
        if not isinstance(step, dict):
            problems.add(at, 'must be an object like {"key": "menu", "kind": "menu", "settings": {...}}.')
            continue
        for unknown in sorted(set(step) - STEP_FIELDS):
            problems.add(at, f'"{unknown}" is not a step field (use key, kind, settings, next).')
        key = step.get("key")
        if not isinstance(key, str) or not KEY.fullmatch(key):
            problems.add(at, "key: required, at most 40 letters, digits, - or _.")
            continue
        if key in seen:
            problems.add(at, f'two steps have the key "{key}".')
            continue
        seen.add(key)
        good.append(step)
    return good


def definition_errors(definition: dict, *, workspace, also_named: Iterable[str] = ()) -> list[str]:
    """Everything wrong with a workflow definition, for `workspace`: its team names, and the
    workflows `start_workflow` steps name (existing ones, or `also_named`: the same import's)."""
    if not isinstance(definition, dict):
        return ["A workflow definition must be a JSON object."]
    teams, workflows = workspace_names(workspace)
    workflows |= {*also_named, str(definition.get("name"))}
    problems = Problems()
    _top_level_errors(definition, problems, teams, workspace)
    steps = _step_list_errors(definition.get("steps"), problems)
    problems.keys = {step["key"] for step in steps}
    start = definition.get("start_step", "")
    if start and start not in problems.keys:
        problems.add("start_step", f'no step has the key "{start}".')
    for step in steps:
        at = f'step "{step["key"]}"'
        kind, settings = step.get("kind"), step.get("settings", {})
        for message in step_settings_errors(kind, settings, problems.keys):
            problems.add(at, message)
        for message in step_names_errors(kind, settings, teams=teams, workflows=workflows):
            problems.add(at, message)
        step_key(problems, f"{at} next", step.get("next", ""))
    return problems.messages


# Reading and writing workflows ---------------------------------------------------------------


def definition_of(workflow: Workflow) -> dict:
    """The live workflow and its steps, in the definition's shape."""
    team = workflow.handover_team.name if workflow.handover_team_id else None
    return {
        "name": workflow.name,
        "description": workflow.description,
        "enabled": workflow.enabled,
        "trigger": workflow.trigger,
        "trigger_settings": workflow.trigger_settings or {},
        "priority": workflow.priority,
        "start_step": workflow.start_step,
        "max_steps": workflow.max_steps,
        "handover_team": team,
        "steps": [
            {"key": step.key, "kind": step.kind, "settings": step.settings or {}, "next": step.next}
            for step in Step.objects.filter(workflow=workflow).order_by("position", "id")
        ],
    }


def workflow_export(*, workflow: Workflow) -> dict:
    return definition_of(workflow)


def workflows_export(*, workflows: Iterable[Workflow]) -> dict:
    """Several workflows in one file, which `definitions_parse` reads back."""
    return {"workflows": [definition_of(workflow) for workflow in workflows]}


def definitions_parse(data: Any) -> list[dict]:
    """The definitions in an imported file: one definition, a list of them, or {"workflows": [...]}."""
    if isinstance(data, dict) and "workflows" in data and "steps" not in data:
        data = data["workflows"]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise DomainError("The file holds no workflow.", code="invalid_workflow", fields={"definition": ["Empty."]})
    return items


def workflow_publish(*, workflow: Workflow, user=None) -> WorkflowVersion:
    """Stores the workflow as it is now as its next version, which new runs follow (runs already
    going keep theirs). Publishing an unchanged workflow keeps the latest version."""
    with transaction.atomic():
        # Two saves at once must not both become version N+1.
        locked = Workflow.objects.select_for_update(of=("self",)).select_related("handover_team").get(pk=workflow.pk)
        definition = definition_of(locked)
        latest = WorkflowVersion.objects.filter(workflow=locked).order_by("-number").first()
        if latest is not None and latest.definition == definition and latest.number == locked.version:
            return latest
        Workflow.objects.filter(pk=locked.pk).update(version=F("version") + 1)
        locked.refresh_from_db(fields=["version"])
        version = WorkflowVersion.objects.create(
            workspace_id=locked.workspace_id,
            workflow=locked,
            number=locked.version,
            definition=definition,
            created_by=user,
        )
    workflow.version = locked.version
    return version


def _invalid(errors: list[str], *, label: str = "") -> DomainError:
    where = f"{label}: " if label else ""
    return DomainError(
        f"{where}{errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
        code="invalid_workflow",
        fields={"definition": [f"{where}{error}" for error in errors]},
    )


def _workflow_fields(definition: dict, workspace) -> dict:
    from apps.workspaces.models import Team

    team_name = definition.get("handover_team")
    return {
        "description": definition.get("description", ""),
        "enabled": definition.get("enabled", True),
        "trigger": definition["trigger"],
        "trigger_settings": definition.get("trigger_settings") or {},
        "priority": definition.get("priority", 100),
        "start_step": definition.get("start_step", ""),
        "max_steps": definition.get("max_steps", 60),
        "handover_team": Team.objects.get(workspace=workspace, name=team_name) if team_name else None,
    }


def _workflow_replace(*, workspace, definition: dict, user=None) -> Workflow:
    fields = _workflow_fields(definition, workspace)
    workflow = Workflow.objects.select_for_update().filter(workspace=workspace, name=definition["name"]).first()
    if workflow is None:
        workflow = Workflow.objects.create(workspace=workspace, name=definition["name"], **fields)
    else:
        for field, value in fields.items():
            setattr(workflow, field, value)
        workflow.save(update_fields=[*fields, "updated_at"])
        Step.objects.filter(workflow=workflow).delete()
    Step.objects.bulk_create(
        Step(
            workspace=workspace,
            workflow=workflow,
            key=step["key"],
            kind=step["kind"],
            settings=step.get("settings") or {},
            next=step.get("next") or "",
            position=(index + 1) * 10,
        )
        for index, step in enumerate(definition["steps"])
    )
    workflow_publish(workflow=workflow, user=user)
    return workflow


def workflow_import(*, workspace, definition: dict, user=None, also_named: Iterable[str] = ()) -> Workflow:
    """Creates the workflow, or replaces the one of the same name (its steps with it), and
    publishes it. Raises DomainError(code="invalid_workflow") naming every mistake."""
    errors = definition_errors(definition, workspace=workspace, also_named=also_named)
    if errors:
        raise _invalid(errors)
    with transaction.atomic():
        return _workflow_replace(workspace=workspace, definition=definition, user=user)


def workflows_import(*, workspace, definitions: list[dict], user=None) -> list[Workflow]:
    """Several workflows at once, all or none; they may start one another."""
    named = {d.get("name") for d in definitions if isinstance(d, dict) and isinstance(d.get("name"), str)}
    errors = []
    for index, definition in enumerate(definitions, 1):
        label = definition.get("name") if isinstance(definition, dict) else None
        found = definition_errors(definition, workspace=workspace, also_named=named)
        errors += [f"{label or f'workflow #{index}'}: {error}" for error in found]
    if len(named) < len(definitions) and not errors:
        errors.append("Two workflows in the file have the same name.")
    if errors:
        raise _invalid(errors)
    with transaction.atomic():
        return [_workflow_replace(workspace=workspace, definition=d, user=user) for d in definitions]


def workflows_set_enabled(*, workflows, enabled: bool) -> int:
    """Switches workflows on or off (runs already going finish either way)."""
    return Workflow.objects.filter(pk__in=[w.pk for w in workflows]).update(enabled=enabled)
