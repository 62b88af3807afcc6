"""Texts a bot sends: one per language, with `{{variables}}` filled from the run's context."""

import re
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")


def lookup(context: dict, path: str) -> Any:
    """`a.b.c` in nested dicts (and lists by index); None when any part is missing."""
    value: Any = context
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def render(template: str, context: dict) -> str:
    """Fills `{{contact.first_name}}`-style variables; an unknown one becomes empty, never an error."""

    def fill(match: re.Match) -> str:
        value = lookup(context, match.group(1))
        return "" if value is None else str(value)

    return VARIABLE.sub(fill, template or "")


def render_data(value: Any, context: dict) -> Any:
    """Every string inside a JSON body rendered (an HTTP step's body, headers)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {key: render_data(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_data(item, context) for item in value]
    return value


def localised(value: Any, language: str, default_language: str = "en") -> str:
    """A text given as a string, or as {"en": ..., "ru": ...}: the run's language, else the
    workspace's default, else the base language ("zh" for "zh-hant"), else the first given."""
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    if not value:
        return ""
    for candidate in (language, default_language, (language or "").split("-")[0]):
        if candidate and value.get(candidate):
            return str(value[candidate])
    return str(next(iter(value.values())))


def all_variants(value: Any) -> list[str]:
    """Every language's version of a text (to recognise a typed option title in any language)."""
    if isinstance(value, dict):
        return [str(text) for text in value.values() if text]
    return [str(value)] if value else []
