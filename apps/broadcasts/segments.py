"""Segments: audiences described as conditions on contacts, evaluated as ONE SQL query.

A definition is `{"match": "all" | "any", "conditions": [...]}`; each condition is either
`{"field": F, "op": O, "value": V}` or a nested group of the same shape (docs/segments.md lists
every field and op). `segment_errors` says what is wrong with a definition in words a supervisor
can act on; `segment_q` turns a valid one into a `Q` on `Contact`; `segment_contacts` and
`segment_count` run it. Related rows (tags, identities, orders, conversations, broadcast
recipients) are tested with `EXISTS` subqueries rather than joins, so a contact appears once and
no `DISTINCT` is needed; nothing is loaded into Python.

Every condition compiles to an expression that is never SQL NULL where it is negated (`is_not`,
`has_not`...), so "is not" always means "everyone else", including contacts with no value.
"""

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import reduce

from django.db.models import (
    Case,
    CharField,
    Count,
    DateField,
    DecimalField,
    Exists,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Left, Lower, Upper
from django.db.models.lookups import Exact, GreaterThan, IContains, In, LessThan, Regex
from django.utils import timezone

from apps.connectors.models import ChannelKind
from apps.contacts.models import Contact, ContactIdentity, CustomFieldDefinition, Order
from apps.core.exceptions import DomainError

# What a supervisor may build in the editor. `segment_q` allows more (see QUERY_LIMITS): the
# sender wraps a segment in a group of its own to add a campaign's conditions.
MAX_DEPTH = 5
MAX_CONDITIONS = 100
MAX_LIST = 500
MAX_TEXT = 200
MAX_DAYS = 36_600  # a hundred years
CUSTOM_PREFIX = "custom."
CUSTOM_KEY = re.compile(r"^[-a-zA-Z0-9_]{1,60}$")
# A custom value that can be read as a number or a date; anything else never matches gt / lt
# instead of aborting the whole query with a cast error (custom fields are free JSON).
NUMBER_TEXT = r"^-?[0-9]{1,60}(\.[0-9]{1,60})?([eE][-+]?[0-9]{1,3})?$"
# Only calendar dates (leap years included) so that ::date can never fail; a time may follow.
DATE_TEXT = (
    r"^([1-9][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    r"|02-(0[1-9]|1[0-9]|2[0-8]))"
    r"|([1-9][0-9](0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26])00)-02-29)([T ].*)?$"
)


# The shape of each field's value, checked by `_value_error`.
TEXT = "text"
TEXTS = "texts"
DAYS = "days"
NOTHING = "nothing"
MOMENT = "moment"
LIFECYCLE = "lifecycle"
LIFECYCLES = "lifecycles"
CHANNEL_KIND = "channel_kind"
CHANNEL = "channel"
CUSTOM = "custom"
CUSTOM_BOUND = "custom_bound"
CUSTOM_LIST = "custom_list"
FLAG = "flag"

_MOMENT_OPS = {"older_than_days": DAYS, "within_days": DAYS, "never": NOTHING, "before": MOMENT, "after": MOMENT}
FIELDS: dict[str, dict[str, str]] = {
    "tag": {"is": TEXT, "is_not": TEXT},
    "lifecycle": {"is": LIFECYCLE, "is_not": LIFECYCLE, "in": LIFECYCLES},
    "language": {"is": TEXT, "is_not": TEXT, "in": TEXTS},
    "country": {"is": TEXT, "is_not": TEXT, "in": TEXTS},
    "channel": {"has": CHANNEL, "has_not": CHANNEL},
    "marketing_opt_in": {"is": CHANNEL_KIND, "is_not": CHANNEL_KIND},
    "last_purchase_at": _MOMENT_OPS,
    "last_seen_at": _MOMENT_OPS,
    "created_at": {op: kind for op, kind in _MOMENT_OPS.items() if op != "never"},
    "last_marketing_at": {"older_than_days": DAYS, "within_days": DAYS, "never": NOTHING},
    "ordered_sku": {"is": TEXT, "is_not": TEXT},
    "conversation_category": {"is": TEXT, "is_not": TEXT},
}
CUSTOM_OPS: dict[str, str] = {
    "is": CUSTOM,
    "is_not": CUSTOM,
    "in": CUSTOM_LIST,
    "contains": TEXT,
    "gt": CUSTOM_BOUND,
    "lt": CUSTOM_BOUND,
    "exists": FLAG,
}
# Which custom-field ops each custom field type takes (CustomFieldDefinition.Type).
CUSTOM_TYPE_OPS = {
    "text": {"is", "is_not", "in", "contains", "exists"},
    "choice": {"is", "is_not", "in", "contains", "exists"},
    "number": {"is", "is_not", "in", "gt", "lt", "exists"},
    "date": {"is", "is_not", "in", "gt", "lt", "exists"},
    "boolean": {"is", "is_not", "exists"},
}

EXAMPLE = {
    "match": "all",
    "conditions": [
        {"field": "marketing_opt_in", "op": "is", "value": "whatsapp"},
        {"field": "last_purchase_at", "op": "older_than_days", "value": 30},
        {
            "match": "any",
            "conditions": [
                {"field": "language", "op": "in", "value": ["en", "ar"]},
                {"field": "country", "op": "is", "value": "EG"},
            ],
        },
    ],
}


# Validation -----------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What one pass over a definition found: its mistakes, and the names it refers to, which
    only the workspace can confirm (checked afterwards, one query per kind of name)."""

    max_depth: int
    max_conditions: int
    errors: list[str] = field(default_factory=list)
    conditions: int = 0
    tags: dict[str, str] = field(default_factory=dict)  # name -> first place it is used
    channels: dict[int, str] = field(default_factory=dict)
    custom: list[tuple[str, str, str, object]] = field(default_factory=list)  # place, key, op, value


def segment_errors(definition, *, workspace) -> list[str]:
    """Every mistake in a definition, each naming its place (`conditions #3.1: ...`); empty when
    it is fine. With a workspace (or its id), the tags, channels and custom fields it names must
    exist there and custom values must suit the field's type; with None only the shape is checked."""
    walk = _walk(definition, max_depth=MAX_DEPTH, max_conditions=MAX_CONDITIONS)
    workspace_id = getattr(workspace, "pk", workspace)
    if workspace_id is not None:
        _check_names(walk, workspace_id)
    return sorted(walk.errors, key=_place_order)


def _place_order(message: str) -> tuple[int, ...]:
    """In the order of the definition: the whole segment's first, then conditions #1, #1.1, #2…"""
    place = re.match(r"conditions #([0-9.]+):", message)
    return tuple(int(number) for number in place.group(1).split(".")) if place else ()


def _walk(definition, *, max_depth: int, max_conditions: int) -> _Walk:
    walk = _Walk(max_depth=max_depth, max_conditions=max_conditions)
    if not isinstance(definition, dict) or "field" in definition:
        walk.errors.append('A segment is a JSON object: {"match": "all", "conditions": [...]}.')
        return walk
    _walk_group(walk, definition, place="", depth=1)
    if walk.conditions > max_conditions:
        walk.errors.append(f"A segment has at most {max_conditions} conditions; this one has {walk.conditions}.")
    return walk


def _walk_group(walk: _Walk, group: dict, *, place: str, depth: int) -> None:
    where = f"{place}: " if place else ""
    unknown = sorted(set(group) - {"match", "conditions"})
    if unknown:
        walk.errors.append(f'{where}unknown key "{unknown[0]}" (a group has "match" and "conditions")')
    if group.get("match") not in ("all", "any"):
        walk.errors.append(f'{where}"match" must be "all" or "any"')
    conditions = group.get("conditions")
    if not isinstance(conditions, list):
        walk.errors.append(f'{where}"conditions" must be a list')
        return
    if not conditions:
        walk.errors.append(f"{where}add at least one condition")
    for index, item in enumerate(conditions, start=1):
        inner = f"{place}.{index}" if place else f"conditions #{index}"
        if isinstance(item, dict) and "conditions" in item and "field" not in item:
            if depth >= walk.max_depth:
                walk.errors.append(f"{inner}: groups nest at most {walk.max_depth} deep")
                continue
            _walk_group(walk, item, place=inner, depth=depth + 1)
        else:
            walk.conditions += 1
            _walk_condition(walk, item, place=inner)


def _walk_condition(walk: _Walk, condition, *, place: str) -> None:
    if not isinstance(condition, dict):
        walk.errors.append(f'{place}: a condition is an object like {{"field": "tag", "op": "is", "value": "vip"}}')
        return
    unknown = sorted(set(condition) - {"field", "op", "value"})
    if unknown:
        walk.errors.append(f'{place}: unknown key "{unknown[0]}" (a condition has "field", "op" and "value")')
        return
    name, op = condition.get("field"), condition.get("op")
    ops = _ops_of(name)
    if ops is None:
        walk.errors.append(f"{place}: {_unknown_field(name)}")
        return
    if op not in ops:
        shown = f'"{op}"' if isinstance(op, str) else "missing"
        walk.errors.append(f'{place}: "{name}" takes {" / ".join(ops)}; "op" is {shown}')
        return
    value = condition.get("value")
    problem = _value_error(ops[op], op, value, has_value="value" in condition)
    if problem:
        walk.errors.append(f"{place}: {problem}")
        return
    _remember_names(walk, place, name, op, value)


def _ops_of(name) -> dict[str, str] | None:
    if not isinstance(name, str):
        return None
    if name.startswith(CUSTOM_PREFIX):
        return CUSTOM_OPS if CUSTOM_KEY.match(name[len(CUSTOM_PREFIX) :]) else None
    return FIELDS.get(name)


def _unknown_field(name) -> str:
    if not isinstance(name, str) or not name:
        return '"field" is missing'
    if name.startswith(CUSTOM_PREFIX):
        return f'"{name}": a custom field key has letters, digits, "-" and "_" only'
    return f'unknown field "{name}" (fields: {", ".join(FIELDS)}, custom.<key>)'


def _remember_names(walk: _Walk, place: str, name: str, op: str, value) -> None:
    if name == "tag":
        walk.tags.setdefault(value, place)
    elif name == "channel" and isinstance(value, int):
        walk.channels.setdefault(value, place)
    elif name.startswith(CUSTOM_PREFIX):
        walk.custom.append((place, name[len(CUSTOM_PREFIX) :], op, value))


def _is_text(value) -> bool:
    return isinstance(value, str) and 0 < len(value.strip()) <= MAX_TEXT


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_scalar(value) -> bool:
    return _is_text(value) or _is_number(value) or isinstance(value, bool)


def _value_error(kind: str, op: str, value, *, has_value: bool) -> str | None:
    """What is wrong with a condition's value, or None."""
    kinds = [str(choice) for choice in ChannelKind.values]
    checks: dict[str, tuple[Callable[[object], bool], str]] = {
        TEXT: (_is_text, f'"{op}" needs a text of 1 to {MAX_TEXT} characters'),
        TEXTS: (_list_of(_is_text), f'"{op}" needs a list of 1 to {MAX_LIST} texts'),
        DAYS: (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DAYS,
            f'"{op}" needs a whole number of days',
        ),
        NOTHING: (lambda v: not has_value or v is None, f'"{op}" takes no value'),
        MOMENT: (lambda v: _moment(v) is not None, f'"{op}" needs a date like "2024-05-31"'),
        LIFECYCLE: (lambda v: v in Contact.Lifecycle.values, f"the lifecycle is one of {_listed(Contact.Lifecycle)}"),
        LIFECYCLES: (
            _list_of(lambda v: v in Contact.Lifecycle.values),
            f'"{op}" needs a list of lifecycle stages: {_listed(Contact.Lifecycle)}',
        ),
        CHANNEL_KIND: (lambda v: v in kinds, f'"{op}" needs a channel kind: {", ".join(kinds)}'),
        CHANNEL: (
            lambda v: v in kinds or (isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63),
            f'"{op}" needs a channel kind ({", ".join(kinds)}) or a channel id',
        ),
        CUSTOM: (_is_scalar, f'"{op}" needs a text, a number, true or false'),
        CUSTOM_BOUND: (lambda v: _is_number(v) or _iso_date(v), f'"{op}" needs a number, or a date like "2024-05-31"'),
        CUSTOM_LIST: (_list_of(_is_scalar), f'"{op}" needs a list of 1 to {MAX_LIST} values'),
        FLAG: (lambda v: v is None or isinstance(v, bool), f'"{op}" takes true (set) or false (not set)'),
    }
    valid, message = checks[kind]
    return None if valid(value) else message


def _list_of(valid: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list) and 0 < len(value) <= MAX_LIST and all(map(valid, value))


def _listed(choices) -> str:
    return ", ".join(str(value) for value in choices.values)


def _iso_date(value) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _moment(value) -> tuple[datetime, datetime] | None:
    """A date or an ISO date-time as the span it names (UTC): a date is its whole day, an
    instant is itself. None when it is neither."""
    day = _iso_date(value)
    try:
        if day is not None:
            start = datetime.combine(day, time.min, tzinfo=UTC)
            return start, start + timedelta(days=1)
        if not isinstance(value, str) or "T" not in value:
            return None
        instant = datetime.fromisoformat(value)
        # In UTC: PostgreSQL takes offsets up to ±15:59 only, Python up to ±23:59.
        instant = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    except (ValueError, OverflowError):  # not a moment, or past year 9999
        return None
    return instant, instant


def _check_names(walk: _Walk, workspace_id: int) -> None:
    from apps.connectors.models import Channel
    from apps.contacts.models import Tag

    if walk.tags:
        known = set(
            Tag.objects.filter(workspace_id=workspace_id, name__in=list(walk.tags)).values_list("name", flat=True)
        )
        walk.errors += [
            f'{place}: no tag "{name}" in this workspace' for name, place in walk.tags.items() if name not in known
        ]
    if walk.channels:
        known_ids = set(
            Channel.objects.filter(workspace_id=workspace_id, pk__in=list(walk.channels)).values_list("pk", flat=True)
        )
        walk.errors += [
            f"{place}: no channel with id {pk} in this workspace"
            for pk, place in walk.channels.items()
            if pk not in known_ids
        ]
    if walk.custom:
        keys = {key for _, key, _, _ in walk.custom}
        definitions = {d.key: d for d in CustomFieldDefinition.objects.filter(workspace_id=workspace_id, key__in=keys)}
        for place, key, op, value in walk.custom:
            problem = _custom_error(definitions.get(key), key, op, value)
            if problem:
                walk.errors.append(f"{place}: {problem}")


def _custom_error(definition: CustomFieldDefinition | None, key: str, op: str, value) -> str | None:
    if definition is None:
        return f'no custom field "{key}" in this workspace'
    kind = definition.type
    if op not in CUSTOM_TYPE_OPS.get(kind, ()):
        return f'"{key}" is a {kind} field: it takes {" / ".join(sorted(CUSTOM_TYPE_OPS.get(kind, ())))}'
    if op in ("exists", "contains"):
        return None
    for item in value if op == "in" else [value]:
        if not _custom_value_fits(definition, item):
            return f'"{key}" is a {kind} field: {_custom_value_hint(definition)}, not {_shown(item)}'
    return None


def _custom_value_fits(definition: CustomFieldDefinition, value) -> bool:
    kind = definition.type
    if kind == "number":
        return _is_number(value)
    if kind == "date":
        return _iso_date(value) is not None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "choice" and definition.choices:
        return value in definition.choices
    return isinstance(value, str)


def _custom_value_hint(definition: CustomFieldDefinition) -> str:
    hints = {
        "number": "compare it with a number",
        "date": 'compare it with a date like "2024-05-31"',
        "boolean": "compare it with true or false",
        "choice": f"compare it with one of {', '.join(map(str, definition.choices))}",
    }
    return hints.get(definition.type, "compare it with a text")


def _shown(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


# SQL ------------------------------------------------------------------------------------------


# Room around a saved segment: a campaign wraps it in a group with its own conditions.
QUERY_LIMITS = {"max_depth": MAX_DEPTH * 2, "max_conditions": MAX_CONDITIONS * 4}


def segment_q(definition, *, workspace_id: int, now: datetime | None = None) -> Q:
    """The definition as a filter on Contact: the workspace's contacts that were not merged away
    and match it. Relative dates count back from `now` (UTC, N days of 24 hours). A definition of
    the wrong shape raises DomainError (code `invalid_segment`); a tag or custom field that no
    longer exists simply matches nobody."""
    errors = _walk(definition, **QUERY_LIMITS).errors
    if errors:
        raise DomainError(errors[0], code="invalid_segment", fields={"definition": errors})
    now = now or timezone.now()
    return Q(workspace_id=workspace_id, merged_into__isnull=True) & _group_q(definition, now)


def segment_contacts(*, workspace_id: int, definition, now: datetime | None = None) -> QuerySet[Contact]:
    """One query, no joins (related rows are EXISTS subqueries), so no DISTINCT: `.explain()` it,
    `.count()` it, or stream it with `.iterator()` / `.values_list("pk")`. Ordered by id, so a
    batched reader can go on from the last id it saw."""
    return Contact.objects.filter(segment_q(definition, workspace_id=workspace_id, now=now)).order_by("pk")


def segment_count(*, workspace_id: int, definition, now: datetime | None = None) -> int:
    return segment_contacts(workspace_id=workspace_id, definition=definition, now=now).count()


def segment_has_contact(*, workspace_id: int, definition, contact_id: int, now: datetime | None = None) -> bool:
    """Whether one contact is in the segment (a workflow's condition, say): one EXISTS query."""
    return segment_contacts(workspace_id=workspace_id, definition=definition, now=now).filter(pk=contact_id).exists()


def segment_counts(*, segments, now: datetime | None = None) -> dict[int, int | None]:
    """The size of each segment (None for one whose definition is broken) in ONE query: a
    `COUNT(*) FILTER (WHERE ...)` per segment over the contacts of their workspaces."""
    segments = list(segments)
    counters, sizes = {}, {segment.pk: None for segment in segments}
    for segment in segments:
        try:
            condition = segment_q(segment.definition, workspace_id=segment.workspace_id, now=now)
        except DomainError:
            continue
        counters[f"segment_{segment.pk}"] = Count("pk", filter=condition)
    if counters:
        workspaces = {segment.workspace_id for segment in segments}
        totals = Contact.objects.filter(workspace_id__in=workspaces).aggregate(**counters)
        sizes.update({int(name.removeprefix("segment_")): total for name, total in totals.items()})
    return sizes


def _group_q(group: dict, now: datetime) -> Q:
    parts = [
        _group_q(item, now) if "conditions" in item and "field" not in item else _condition_q(item, now)
        for item in group["conditions"]
    ]
    if not parts:  # only reachable through segment_q's looser limits: "all of nothing" is everyone
        return Q() if group["match"] == "all" else Q(pk__in=[])
    return reduce(operator.and_ if group["match"] == "all" else operator.or_, parts)


def _condition_q(condition: dict, now: datetime) -> Q:
    name, op, value = condition["field"], condition["op"], condition.get("value")
    if name.startswith(CUSTOM_PREFIX):
        return _custom_q(name[len(CUSTOM_PREFIX) :], op, value)
    return BUILDERS[name](op, value, now)


def _negated_if(op: str, condition: Q) -> Q:
    return ~condition if op in ("is_not", "has_not") else condition


def _related(queryset) -> Q:
    """A contact's related rows, tested without a join."""
    return Q(Exists(queryset))


def _tag_q(op: str, value, now) -> Q:
    tagged = Contact.tags.through.objects.filter(contact_id=OuterRef("pk"), tag__name=value)
    return _negated_if(op, _related(tagged))


def _choice_q(column: str, fold: type[Func] | None = None) -> Callable[[str, object, datetime], Q]:
    """A plain column; language and country compared case-insensitively (`EN` is `en`)."""
    expression = fold(column) if fold else F(column)
    normal = {Lower: str.lower, Upper: str.upper}.get(fold, str)

    def build(op: str, value, now) -> Q:
        if op == "in":
            return Q(In(expression, sorted({normal(item.strip()) for item in value})))
        return _negated_if(op, Q(Exact(expression, normal(value.strip()))))

    return build


def _channel_q(op: str, value, now) -> Q:
    identities = ContactIdentity.objects.filter(contact_id=OuterRef("pk"))
    identities = (
        identities.filter(channel_id=value) if isinstance(value, int) else identities.filter(channel__kind=value)
    )
    return _negated_if(op, _related(identities))


def _opt_in_q(op: str, value, now) -> Q:
    # Containment is never NULL (unlike a key lookup on a contact with no consent recorded), so
    # "is_not" includes everyone who never opted in.
    return _negated_if(op, Q(marketing_consent__contains={value: {"opted_in": True}}))


def _moment_q(column: str) -> Callable[[str, object, datetime], Q]:
    def build(op: str, value, now: datetime) -> Q:
        if op == "never":
            return Q(**{f"{column}__isnull": True})
        if op == "older_than_days":
            return Q(**{f"{column}__lt": now - timedelta(days=value)})
        if op == "within_days":
            return Q(**{f"{column}__gte": now - timedelta(days=value)})
        start, end = _moment(value)
        return Q(**{f"{column}__lt": start}) if op == "before" else Q(**{f"{column}__gte": end})

    return build


def _last_marketing_q(op: str, value, now: datetime) -> Q:
    from apps.broadcasts.models import Recipient

    sent = Recipient.objects.filter(contact_id=OuterRef("pk"), sent_at__isnull=False)
    if op == "never":
        return ~_related(sent)
    recent = _related(sent.filter(sent_at__gte=now - timedelta(days=value)))
    # "Not messaged in the last N days" includes those never messaged at all.
    return recent if op == "within_days" else ~recent


def _ordered_sku_q(op: str, value, now) -> Q:
    orders = Order.objects.filter(contact_id=OuterRef("pk"), items__contains=[{"sku": value}])
    return _negated_if(op, _related(orders))


def _category_q(op: str, value, now) -> Q:
    from apps.conversations.models import Conversation

    conversations = Conversation.objects.filter(contact_id=OuterRef("pk"), category=value)
    return _negated_if(op, _related(conversations))


BUILDERS: dict[str, Callable[[str, object, datetime], Q]] = {
    "tag": _tag_q,
    "lifecycle": _choice_q("lifecycle_stage"),
    "language": _choice_q("language", Lower),
    "country": _choice_q("country", Upper),
    "channel": _channel_q,
    "marketing_opt_in": _opt_in_q,
    "last_purchase_at": _moment_q("last_purchase_at"),
    "last_seen_at": _moment_q("last_seen_at"),
    "created_at": _moment_q("created_at"),
    "last_marketing_at": _last_marketing_q,
    "ordered_sku": _ordered_sku_q,
    "conversation_category": _category_q,
}


def _custom_q(key: str, op: str, value) -> Q:
    # Equality by JSON containment: typed (5 matches 5.0, "5" does not), never NULL, GIN-friendly.
    def equal(item) -> Q:
        return Q(custom_fields__contains={key: item})

    if op in ("is", "is_not"):
        return _negated_if(op, equal(value))
    if op == "in":
        return reduce(operator.or_, map(equal, value))
    if op == "exists":
        present = Q(custom_fields__has_key=key) & ~equal(None) & ~equal("")
        return present if value is not False else ~present
    text = KeyTextTransform(key, "custom_fields")
    if op == "contains":
        return Q(IContains(text, value))
    compare = GreaterThan if op == "gt" else LessThan
    return Q(compare(*_custom_ordered(key, value)))


def _custom_ordered(key: str, value) -> tuple[Case, object]:
    """The custom value and the bound, both typed: numbers compare as numbers, dates as dates.
    The type comes from the bound (the validator made it suit the field's definition), so
    counting needs no lookup of the field's type; a value that is not a number (or a date) is
    NULL here, so it matches neither gt nor lt."""
    text = KeyTextTransform(key, "custom_fields")
    if _is_number(value):
        number = Func(text, template="(%(expressions)s)::numeric", output_field=DecimalField())
        readable = Q(Exact(_json_type(key), "number")) | Q(Regex(text, NUMBER_TEXT))
        return Case(When(readable, then=number), output_field=DecimalField()), Decimal(str(value))
    day = Cast(Left(text, 10), DateField())
    return Case(When(Regex(text, DATE_TEXT), then=day), output_field=DateField()), _iso_date(value)


def _json_type(key: str) -> Func:
    return Func(KeyTransform(key, "custom_fields"), function="jsonb_typeof", output_field=CharField())


# The reference shown to supervisors (admin, docs/segments.md) -------------------------------

VALUE_HELP = {
    TEXT: "a text",
    TEXTS: 'a list of texts, e.g. ["en", "ar"]',
    DAYS: "a whole number of days",
    NOTHING: "no value",
    MOMENT: 'a date "2024-05-31" (UTC) or a date-time "2024-05-31T09:00:00+03:00"',
    LIFECYCLE: f"one of {_listed(Contact.Lifecycle)}",
    LIFECYCLES: "a list of lifecycle stages",
    CHANNEL_KIND: 'a channel kind, e.g. "whatsapp"',
    CHANNEL: 'a channel kind, e.g. "whatsapp", or a channel id, e.g. 3',
    CUSTOM: 'a value of the field\'s type: a text, a number, true / false, a date "2024-05-31"',
    CUSTOM_BOUND: 'a number, or a date "2024-05-31"',
    CUSTOM_LIST: "a list of values of the field's type",
    FLAG: "true (has a value; the default) or false (has none)",
}
FIELD_HELP = {
    "tag": "the contact has (is) or has not (is_not) this tag",
    "lifecycle": "lifecycle stage",
    "language": "the contact's language code (case does not matter)",
    "country": "two-letter country code (case does not matter)",
    "channel": "the contact is known on a channel of this kind, or on the channel with this id",
    "marketing_opt_in": "the contact opted in to marketing on this kind of channel",
    "last_purchase_at": "their last order",
    "last_seen_at": "the last time they wrote to us",
    "created_at": "when the contact was created",
    "last_marketing_at": "the last broadcast message sent to them (older_than_days includes never messaged)",
    "ordered_sku": "an order of theirs has an item with this SKU",
    "conversation_category": "a conversation of theirs has this category",
    "custom.<key>": "a custom field: gt / lt compare numbers as numbers and dates as dates",
}


def reference_rows() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(field, what it is, [(op, what the value is)]) for every field, custom fields last."""
    rows = [
        (name, FIELD_HELP[name], [(op, VALUE_HELP[kind]) for op, kind in ops.items()]) for name, ops in FIELDS.items()
    ]
    rows.append(
        ("custom.<key>", FIELD_HELP["custom.<key>"], [(op, VALUE_HELP[kind]) for op, kind in CUSTOM_OPS.items()])
    )
    return rows
