"""Formatting for the dashboard: durations, shares, and the link from a number to the
conversations behind it (the drill-down keeps the page's filters)."""

from urllib.parse import urlencode

from django import template
from django.urls import reverse

register = template.Library()


@register.simple_tag(takes_context=True)
def drill(context, metric: str, **extra) -> str:
    """`{% drill "closed" agent=row.id %}`: the drill-down URL of a number under the page's filters."""
    filters = context["filters"]
    return f"{reverse('analytics:conversations')}?{urlencode(filters.query(metric=metric, **extra))}"


@register.filter
def duration(seconds) -> str:
    """45 s, 3 min 20 s, 2 h 5 min, 1 d 3 h; an em dash when there is none."""
    try:
        seconds = round(float(seconds))
    except (TypeError, ValueError):
        return "—"
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def percent(share) -> str:
    """0.8534 -> 85.3 %; an em dash when there is no share."""
    try:
        return f"{float(share) * 100:.1f} %".replace(".0 %", " %")
    except (TypeError, ValueError):
        return "—"


@register.filter
def score(value) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def at(sequence, index):
    """`{{ buckets|at:2 }}`: an element of a list."""
    try:
        return sequence[int(index)]
    except (IndexError, TypeError, ValueError):
        return None
