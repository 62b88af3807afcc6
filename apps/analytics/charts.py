"""The dashboard's pictures: SVG rendered on the server with pygal (and the heatmap, which pygal
lacks, drawn here), inlined in the page. No script is embedded (pygal's tooltips load a
third-party script, so `js` is empty, and its inline config script is cut out): values are printed
on the bars instead, and a bar that stands for conversations links to them."""

import pygal
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from pygal.style import Style

INK, MUTED, LINE = "#1d2433", "#667085", "#e4e7ec"
COLOURS = ("#3451d1", "#12b76a", "#f79009", "#d92d20", "#7a5af8", "#0ba5ec", "#667085")

STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground=INK,
    foreground_strong=INK,
    foreground_subtle=LINE,
    colors=COLOURS,
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
    value_font_size=10,
    tooltip_font_size=11,
)


def _config(**extra) -> dict:
    return {
        "style": STYLE,
        "js": [],  # pygal's default tooltips are a script from a CDN: none on our pages
        "disable_xml_declaration": True,
        "width": 640,
        "height": 300,
        "explicit_size": False,  # a viewBox only: the page's CSS sizes it
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 4,
        "margin": 8,
        "no_data_text": _("No data"),
        "print_zeroes": False,
        **extra,
    }


def _without_scripts(root):
    """pygal always writes its config (the titles and labels among it) into an inline <script>,
    for tooltips we do not load; the pages' Content-Security-Policy would refuse it anyway."""
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rpartition("}")[2] == "script":
                parent.remove(child)
    return root


def _svg(chart) -> SafeString:
    chart.add_xml_filter(_without_scripts)
    # pygal escapes labels and values itself; what it returns is the document.
    return mark_safe(chart.render(is_unicode=True))  # noqa: S308


def _linked(values, links) -> list:
    if links is None:
        return list(values)
    return [{"value": v, "xlink": {"href": href, "target": "_self"}} for v, href in zip(values, links, strict=True)]


def _short_number(value) -> str:
    return "" if value is None else f"{value:.10g}" if float(value).is_integer() else f"{value:.1f}"


def bars(title: str, labels, series: dict, *, links: dict | None = None, **options) -> SafeString:
    """A bar chart: `series` maps a name to its values (one per label); `links`, by the same
    names, the URL each bar opens."""
    rotation = 30 if len(labels) > 7 else 0
    options = {"x_label_rotation": rotation, "truncate_label": -1, **options}
    chart = pygal.Bar(**_config(title=title, print_values=len(labels) <= 16, **options))
    chart.x_labels = [str(label) for label in labels]
    for name, values in series.items():
        chart.add(str(name), _linked(values, (links or {}).get(name)))
    return _svg(chart)


def horizontal_bars(title: str, labels, series: dict, *, links: dict | None = None, **options) -> SafeString:
    """Bars across, the first label on top (pygal draws the first at the bottom, hence reversed)."""
    height = max(200, 60 + 28 * len(labels) * max(1, len(series)))
    chart = pygal.HorizontalBar(**_config(title=title, print_values=True, height=height, **options))
    chart.x_labels = [str(label) for label in reversed(labels)]
    for name, values in series.items():
        chart.add(str(name), _linked(values, (links or {}).get(name))[::-1])
    return _svg(chart)


def lines(title: str, labels, series: dict, *, secondary: dict | None = None, **options) -> SafeString:
    """A line chart; `secondary` series are drawn against the right-hand axis (another unit)."""
    many = len(labels) > 20
    every = options.pop("label_every", max(1, len(labels) // 8))
    chart = pygal.Line(
        **_config(
            title=title,
            x_label_rotation=30 if len(labels) > 7 else 0,
            show_minor_x_labels=not many,
            truncate_label=-1,
            show_dots=not many,  # a dot (and its node) per point of a long series costs more than it shows
            dots_size=3,
            allow_interruptions=True,
            value_formatter=_short_number,
            **options,
        )
    )
    chart.x_labels = [str(label) for label in labels]
    if many:
        chart.x_labels_major = [str(label) for label in labels[::every]]
    # pygal cannot scale a series with no value at all: such a series is left out (the legend too).
    for name, values in series.items():
        if any(v is not None for v in values):
            chart.add(str(name), list(values))
    for name, values in (secondary or {}).items():
        if any(v is not None for v in values):
            chart.add(str(name), list(values), secondary=True)
    return _svg(chart)


def heatmap(title: str, rows: list[list[int]], row_labels, *, link=None) -> SafeString:
    """A grid of rows x 24 hours, darker where there is more; `link(row, hour)` is a cell's URL.
    Drawn by hand: pygal has no heatmap."""
    cell, left, top = 24, 44, 36
    peak = max((max(row) for row in rows), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {left + 24 * cell + 8} {top + len(rows) * cell + 8}"'
        f' class="heatmap" role="img" aria-label="{escape(title)}">',
        f'<text x="0" y="14" class="title">{escape(title)}</text>',
    ]
    for hour in range(0, 24, 3):
        parts.append(f'<text x="{left + hour * cell + cell / 2}" y="{top - 6}" class="axis">{hour:02d}</text>')
    for index, (label, row) in enumerate(zip(row_labels, rows, strict=True)):
        y = top + index * cell
        parts.append(f'<text x="0" y="{y + cell * 0.66}" class="axis">{escape(str(label))}</text>')
        for hour, value in enumerate(row):
            shade = 0.06 + 0.94 * value / peak if value else 0.0
            rect = (
                f'<rect x="{left + hour * cell}" y="{y}" width="{cell - 2}" height="{cell - 2}" rx="3"'
                f' fill="{COLOURS[0]}" fill-opacity="{shade:.2f}" stroke="{LINE}">'
                f"<title>{escape(str(label))} {hour:02d}:00 · {value}</title></rect>"
            )
            if value and link is not None:
                rect = f'<a href="{escape(link(index, hour))}">{rect}</a>'
            parts.append(rect)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  every text in it is escaped above
