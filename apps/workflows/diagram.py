"""A picture of a workflow's graph for its admin page: plain SVG drawn here, no script, no network.

Steps are laid out in rows by their distance from the first step (breadth-first), so a menu's
choices sit side by side under it. An arrow going down is the way forward; one that goes back up
or sideways (a "try again", a jump back to the menu) is dashed and drawn around the right side.
Steps nothing leads to are shown apart, under the graph. Every text is a supervisor's input and
is escaped."""

import html
import logging
from collections import deque
from typing import Any

logger = logging.getLogger(__name__)

BOX_WIDTH = 230
LINE = 15
PAD = 8
GAP_X = 70
GAP_Y = 84
MARGIN = 24
TRIGGER_HEIGHT = 44
CHARS = 34  # what fits on a line of a box at 12px
MAX_SUMMARY_LINES = 5

COLOURS = {  # fill, border: one family per sort of step
    "talk": ("#e8f1fd", "#3b78c3"),  # message, menu, ask, csat
    "logic": ("#fff5dc", "#c79a1b"),  # branch, hours, jump, wait, set_language
    "people": ("#e6f6ea", "#2f8a4a"),  # route, handover, close
    "system": ("#f1eafb", "#7a4cc2"),  # faq, order_lookup, http, notify
    "record": ("#f2f2f2", "#777777"),  # note, update_contact, start_workflow
}
FAMILY = {
    "message": "talk",
    "menu": "talk",
    "ask": "talk",
    "csat": "talk",
    "branch": "logic",
    "hours": "logic",
    "jump": "logic",
    "wait": "logic",
    "set_language": "logic",
    "route": "people",
    "handover": "people",
    "close": "people",
    "faq": "system",
    "order_lookup": "system",
    "http": "system",
    "notify": "system",
}


def _clip(value: Any, limit: int = CHARS) -> str:
    value = " ".join(str(value).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _first_text(value: Any) -> str:
    """A localised text in its first language (the diagram shows one)."""
    if isinstance(value, dict):
        value = next((v for v in value.values() if v), "")
    return "" if value is None else str(value)


def _settings(step: dict) -> dict:
    settings = step.get("settings")
    return settings if isinstance(settings, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


# What leads where ----------------------------------------------------------------------------


def _menu_edges(settings: dict, then: str) -> list[tuple[str, str]]:
    edges = []
    for number, option in enumerate(_list(settings.get("options")), 1):
        if isinstance(option, dict):
            edges.append((option.get("next") or then, f"{number}. {_first_text(option.get('title'))}"))
    return edges


def _rule_label(rule: dict) -> str:
    value = rule.get("value")
    shown = ", ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else str(value))
    return f"{rule.get('if', '?')} {str(rule.get('op', 'equals')).replace('_', ' ')} {shown}".strip()


def edges_of(step: dict) -> list[tuple[str, str]]:
    """(target key, label) for every way out of a step; what the engine (apps/workflows/steps.py)
    takes when a branch is not set: the step's `next`, or the end of the run."""
    kind, settings, then = step.get("kind"), _settings(step), step.get("next") or ""
    named = {
        "ask": [(then, "answer")],
        "message": [(then, "")],
        "branch": [
            (rule.get("next") or then, _rule_label(rule))
            for rule in _list(settings.get("rules"))
            if isinstance(rule, dict)
        ]
        + [(settings.get("else") or then, "else")],
        "route": [(settings.get(name), name) for name in ("assigned", "queued", "closed")],
        "hours": [(settings.get("open") or then, "open"), (settings.get("closed") or then, "closed")],
        "faq": [
            (settings.get("matched") or then, "answered"),
            (settings.get("not_matched") or then, "no answer"),
            (settings.get("helped"), "helped"),
            (settings.get("not_helped"), "did not help"),
        ],
        "order_lookup": [(settings.get("found") or then, "found"), (settings.get("not_found") or then, "not found")],
        "http": [(then, "ok"), (settings.get("failure") or then, "failure")],
        "notify": [
            (then, "replied" if settings.get("wait_for_reply") else "sent"),
            (settings.get("failure"), "failure"),
        ],
        "jump": [(settings.get("to") or then, "jump")],
        "start_workflow": [(then, "no such workflow")],
        "wait": [(then, f"after {settings.get('minutes', '?')} min")],
        "handover": [],
        "menu": _menu_edges(settings, then),
    }.get(kind, [(then, "")])
    if kind in ("menu", "ask"):
        named.append((settings.get("fallback"), "no valid answer"))
    if kind in ("menu", "ask", "notify"):
        named.append((settings.get("timeout"), "timeout"))
    return [(str(target), label) for target, label in named if target]


def _merged_edges(steps: list[dict], keys: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Per step, one arrow per target, its labels joined (three choices leading to one step)."""
    merged = {}
    for step in steps:
        by_target: dict[str, list[str]] = {}
        for target, label in edges_of(step):
            if target in keys:
                by_target.setdefault(target, [])
                if label and label not in by_target[target]:
                    by_target[target].append(label)
        merged[step["key"]] = [(target, ", ".join(labels)) for target, labels in by_target.items()]
    return merged


# What a box says -----------------------------------------------------------------------------


def _summary(step: dict) -> list[str]:
    kind, settings = step.get("kind"), _settings(step)
    lines = []
    if settings.get("text") and kind not in ("note",):
        lines.append(f"“{_clip(_first_text(settings['text']), CHARS - 2)}”")
    if kind in ("menu", "message"):
        lines += [
            _clip(f"{n}. {_first_text(o.get('title'))}")
            for n, o in enumerate(_list(settings.get("options")), 1)
            if isinstance(o, dict)
        ]
    elif kind == "ask":
        lines.append(_clip(f"{settings.get('input', 'text')} → vars.{settings.get('save_as', step.get('key'))}"))
    elif kind == "branch":
        count = len(_list(settings.get("rules")))
        lines.append(f"{count} rule{'s' if count != 1 else ''}, else")
    else:
        lines += _other_summary(kind, settings)
    if len(lines) > MAX_SUMMARY_LINES:
        lines = [*lines[: MAX_SUMMARY_LINES - 1], f"… {len(lines) - MAX_SUMMARY_LINES + 1} more"]
    return lines


def _other_summary(kind: str, settings: dict) -> list[str]:
    describe = {
        "set_language": lambda: settings.get("language") or f"from {settings.get('from', '?')}",
        "update_contact": lambda: ", ".join(
            [*(settings.get("set") or {}), *(f"+{t}" for t in _list(settings.get("add_tags")))]
        ),
        "route": lambda: f"team {settings.get('team', '?')} · {settings.get('strategy', 'round_robin')}",
        "hours": lambda: f"team {settings['team']}" if settings.get("team") else "business hours",
        "faq": lambda: f"threshold {settings['threshold']}" if "threshold" in settings else "FAQ answer",
        "order_lookup": lambda: f"from {settings.get('from', 'contact')}",
        "http": lambda: f"{settings.get('method', 'GET')} {settings.get('url', '')}",
        "note": lambda: _first_text(settings.get("text")),
        "notify": lambda: f"{settings.get('via', '?')} {settings.get('url') or settings.get('to') or ''}",
        "close": lambda: f"category {settings['category']}" if settings.get("category") else "closes",
        "wait": lambda: f"{settings.get('minutes', '?')} min",
        "jump": lambda: f"to {settings.get('to', '?')}",
        "start_workflow": lambda: f"starts “{settings.get('workflow', '?')}”",
        "handover": lambda: f"to {settings['team']}" if settings.get("team") else "to the default team",
        "csat": lambda: "rating 1 to 5",
    }.get(kind)
    line = describe() if describe else ""
    return [_clip(line)] if line else []


# Layout --------------------------------------------------------------------------------------


def _depths(start: str, edges: dict[str, list[tuple[str, str]]]) -> dict[str, int]:
    depth, queue = {start: 0}, deque([start])
    while queue:
        key = queue.popleft()
        for target, _label in edges.get(key, []):
            if target not in depth:
                depth[target] = depth[key] + 1
                queue.append(target)
    return depth


def _height(step: dict) -> int:
    return PAD * 2 + LINE * (2 + len(_summary(step)))


def _text(x: float, y: float, value: str, **attrs) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{html.escape(str(v))}"' for name, v in attrs.items())
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{html.escape(value)}</text>'


class _Canvas:
    """Arrows under boxes, their labels over both."""

    def __init__(self):
        self.edges: list[str] = []
        self.parts: list[str] = []
        self.labels: list[str] = []

    def text(self, x: float, y: float, value: str, **attrs) -> None:
        self.parts.append(_text(x, y, value, **attrs))

    def label(self, x: float, y: float, value: str) -> None:
        value = _clip(value, 30)
        width = 6.2 * len(value) + 8
        self.labels.append(
            f'<rect x="{x - width / 2:.0f}" y="{y - 11:.0f}" width="{width:.0f}" height="15" rx="3" '
            'fill="#ffffff" fill-opacity="0.9"/>'
        )
        self.labels.append(_text(x, y, value, text_anchor="middle", font_size="11", fill="#444"))

    def svg(self) -> str:
        return "".join(self.edges + self.parts + self.labels)


def _place(rows: list[list[dict]], top: float, width: float) -> tuple[dict, float]:
    """Boxes of each row centred on the canvas; returns {key: (x, y, h)} and the bottom."""
    where, y = {}, top
    for row in rows:
        row_width = len(row) * BOX_WIDTH + (len(row) - 1) * GAP_X
        x = MARGIN + (width - row_width) / 2
        tallest = max(_height(step) for step in row)
        for step in row:
            where[step["key"]] = (x, y, _height(step))
            x += BOX_WIDTH + GAP_X
        y += tallest + GAP_Y
    return where, y


def _box(canvas: _Canvas, step: dict, x: float, y: float, h: float, *, start: bool, ends: bool) -> None:
    fill, stroke = COLOURS[FAMILY.get(str(step.get("kind")), "record")]
    width = 3 if start else 1.5
    canvas.parts.append(
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_WIDTH}" height="{h:.0f}" rx="8" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{width}"/>'
    )
    canvas.text(x + PAD, y + PAD + 11, _clip(step["key"], 26), font_weight="bold", font_size="13")
    canvas.text(
        x + BOX_WIDTH - PAD,
        y + PAD + 11,
        _clip(step.get("kind", "?"), 14),
        text_anchor="end",
        font_size="11",
        fill=stroke,
    )
    for index, line in enumerate(_summary(step)):
        canvas.text(x + PAD, y + PAD + 11 + LINE * (index + 1.2), line, font_size="12")
    if ends:
        canvas.text(x + BOX_WIDTH / 2, y + h + 14, "ends", text_anchor="middle", font_size="11", fill="#999")


def _bezier(points: tuple, t: float) -> tuple[float, float]:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
    a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3


def _arrow(canvas: _Canvas, source: tuple, target: tuple, label: str, slot: float) -> None:
    (sx, sy, sh), (tx, ty, th) = source, target
    if ty > sy:  # forward: from the bottom of one box down to the top of the other
        x1, y1 = sx + BOX_WIDTH * slot, sy + sh
        x2, y2 = tx + BOX_WIDTH / 2, ty
        bend = max(30.0, (y2 - y1) / 2)
        points = ((x1, y1), (x1, y1 + bend), (x2, y2 - bend), (x2, y2 - 2))
        path = "M{:.0f},{:.0f} C{:.0f},{:.0f} {:.0f},{:.0f} {:.0f},{:.0f}".format(*(c for p in points for c in p))
        canvas.edges.append(f'<path d="{path}" class="edge" marker-end="url(#arrow)"/>')
        if label:  # near the arrow's head, where arrows to different steps have parted
            lx, ly = _bezier(points, 0.68)
            canvas.label(lx, ly + 4, label)
        return
    # back or sideways: around the right-hand side, dashed
    x1, y1 = sx + BOX_WIDTH, sy + sh * slot
    x2, y2 = tx + BOX_WIDTH, ty + th / 2
    reach = 40 + abs(y1 - y2) * 0.15
    points = ((x1, y1), (x1 + reach, y1), (x2 + reach, y2), (x2 + 2, y2))
    path = "M{:.0f},{:.0f} C{:.0f},{:.0f} {:.0f},{:.0f} {:.0f},{:.0f}".format(*(c for p in points for c in p))
    canvas.edges.append(f'<path d="{path}" class="edge back" marker-end="url(#arrow)"/>')
    if label:  # near where it leaves: the way back may be long
        lx, ly = _bezier(points, 0.2)
        canvas.label(lx + 10, ly + 4, label)


def _trigger_line(definition: dict) -> str:
    trigger = str(definition.get("trigger") or "?").replace("_", " ")
    settings = definition.get("trigger_settings") if isinstance(definition.get("trigger_settings"), dict) else {}
    details = "; ".join(
        f"{name}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in settings.items()
    )
    return _clip(f"When: {trigger}" + (f" ({details})" if details else ""), 60)


UNDRAWABLE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="420" height="40"><text x="10" y="25">'
    "The diagram could not be drawn: check the steps' settings.</text></svg>"
)
EMPTY = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="40"><text x="10" y="25">No steps yet.</text></svg>'
)


def _rows(steps: list[dict], start: str, edges: dict) -> tuple[list[list[dict]], list[list[dict]]]:
    """Rows by distance from the first step, then the steps nothing leads to, four to a row."""
    depth = _depths(start, edges)
    by_key = {step["key"]: step for step in steps}
    layers: dict[int, list[dict]] = {}
    for key in depth:  # in the order they were reached: a menu's choices in the menu's order
        layers.setdefault(depth[key], []).append(by_key[key])
    apart = [step for step in steps if step["key"] not in depth]
    return [layers[level] for level in sorted(layers)], [apart[i : i + 4] for i in range(0, len(apart), 4)]


def _trigger(canvas: _Canvas, definition: dict, width: float) -> tuple:
    """The pill above the first step saying what starts the workflow; returns its box."""
    line = _trigger_line(definition)
    pill = max(BOX_WIDTH, 6.8 * len(line) + 32)
    x = MARGIN + (width - pill) / 2
    canvas.parts.append(
        f'<rect x="{x:.0f}" y="{MARGIN}" width="{pill:.0f}" height="{TRIGGER_HEIGHT - 10}" rx="17" fill="#333"/>'
    )
    canvas.text(x + pill / 2, MARGIN + 22, line, text_anchor="middle", font_size="12", fill="#fff")
    return (x + pill / 2 - BOX_WIDTH / 2, MARGIN, TRIGGER_HEIGHT - 10)


def diagram_svg(definition: dict) -> str:
    """The workflow's graph as an `<svg>` element, to put in a page as it is."""
    try:
        return _diagram(definition if isinstance(definition, dict) else {})
    except Exception:  # a picture must never take the admin page down with it (a draft saved by other means)
        logger.exception("could not draw a workflow diagram")
        return UNDRAWABLE


def _diagram(definition: dict) -> str:
    by_key: dict[str, dict] = {}
    for step in _list(definition.get("steps")):
        if isinstance(step, dict) and isinstance(step.get("key"), str):
            by_key.setdefault(step["key"], step)  # a key given twice (an invalid draft): draw the first
    steps = list(by_key.values())
    if not steps:
        return EMPTY
    start = definition.get("start_step") if definition.get("start_step") in by_key else steps[0]["key"]
    edges = _merged_edges(steps, set(by_key))
    rows, apart_rows = _rows(steps, start, edges)
    widest = max(len(row) for row in rows + apart_rows)
    # room on the right for the arrows that go back, and for a long trigger line
    width = max(widest * BOX_WIDTH + (widest - 1) * GAP_X + 120, 6.8 * len(_trigger_line(definition)) + 32)
    canvas = _Canvas()
    where, bottom = _place(rows, MARGIN + TRIGGER_HEIGHT + 40, width)
    if apart_rows:
        note_y = bottom - GAP_Y / 2 + 20
        canvas.text(MARGIN, note_y, "Not reachable from the first step:", font_size="12", fill="#b00020")
        placed, bottom = _place(apart_rows, bottom, width)
        where.update(placed)
    _arrow(canvas, _trigger(canvas, definition, width), where[start], "", 0.5)
    for step in steps:
        outgoing = edges[step["key"]]
        _box(canvas, step, *where[step["key"]], start=step["key"] == start, ends=not outgoing)
        for index, (target, label) in enumerate(outgoing):
            _arrow(canvas, where[step["key"]], where[target], label, (index + 1) / (len(outgoing) + 1))
    size = f"{width + 2 * MARGIN:.0f} {bottom - GAP_Y + MARGIN + 20:.0f}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-diagram" width="{size.split()[0]}" '
        f'height="{size.split()[1]}" viewBox="0 0 {size}" role="img" '
        'font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
        "<style>.edge{fill:none;stroke:#555;stroke-width:1.4}.back{stroke-dasharray:5 4;stroke:#888}</style>"
        f"</defs>{canvas.svg()}</svg>"
    )
