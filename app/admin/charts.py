"""Charts for the admin as inline SVG strings: no script, no web font, nothing to download.

Each chart is an `<svg role="img">` named by its `<title>` and summarised in words by its
`<desc>`, so a screen reader hears what the picture shows; every bar also carries its own
`<title>` (the tooltip on hover). Colours keep at least 3:1 contrast against white."""

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from html import escape

from app.analytics.models import DayFigures

# One colour per flow, in Polaris' spirit; others share a grey.
FLOW_COLORS = {
    "abandoned_cart": "#2c6ecb",
    "post_purchase": "#007f5f",
    "winback": "#b54708",
}
OTHER_COLOR = "#6d7175"
AXIS_COLOR = "#8a8a8a"
GRID_COLOR = "#e3e3e3"
TEXT_COLOR = "#616161"

Number = Decimal | int | float


def flow_color(flow: str) -> str:
    return FLOW_COLORS.get(flow, OTHER_COLOR)


def flow_title(flow: str) -> str:
    """abandoned_cart → Abandoned cart."""
    return {"winback": "Win-back", "post_purchase": "Post-purchase"}.get(
        flow, flow.replace("_", " ").capitalize()
    )


def amount(value: Number, currency: str = "") -> str:
    """1234.5 → "1,234.50 SEK": two decimals, thousands separated, the currency after."""
    text = f"{Decimal(str(value)).quantize(Decimal('0.01')):,}"
    return f"{text} {currency}".strip()


def nice_ceiling(value: Number) -> tuple[Decimal, Decimal]:
    """The top of an axis from 0 that holds `value`, and its tick step: four steps of 1, 2,
    2.5 or 5 times a power of ten (at least a cent). 0 gives an axis from 0 to 4."""
    top = Decimal(str(value))
    if top <= 0:
        return Decimal(4), Decimal(1)
    power = max(Decimal(1).scaleb((top / 4).adjusted()), Decimal("0.01"))
    for factor in (1, 2, Decimal("2.5"), 5, 10):
        step = power * factor
        if step * 4 >= top:
            return step * 4, step
    raise AssertionError("unreachable: ten times the power is at least a quarter of the top")


def _tick_label(value: Decimal) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value.normalize():,f}" if value != value.to_integral() else f"{int(value):,}"


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def _label_every(count: int) -> int:
    """Show at most about eight dates on the axis."""
    return max(1, -(-count // 8))


def _svg_open(width: int, height: int, id_prefix: str, title: str, desc: str) -> list[str]:
    ids = f"{id_prefix}-title {id_prefix}-desc"
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{ids}" focusable="false">',
        f'<title id="{id_prefix}-title">{escape(title)}</title>',
        f'<desc id="{id_prefix}-desc">{escape(desc)}</desc>',
    ]


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def revenue_per_day(
    series: Sequence[DayFigures],
    flows: Sequence[str],
    currency: str,
    *,
    id_prefix: str = "revenue-chart",
    width: int = 880,
    height: int = 260,
) -> str:
    """A stacked bar chart: one column per day, one coloured segment per flow that earned
    something that day, a y axis in the shop's currency and dates along the x axis."""
    left, right, top, bottom = 56, 8, 12, 52  # room for the axis labels and the legend
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum((d.revenue.get(f, Decimal(0)) for f in flows), Decimal(0)) for d in series]
    axis_top, step = nice_ceiling(max(totals, default=Decimal(0)))

    def y(value: Decimal) -> float:
        return top + plot_h - float(value / axis_top) * plot_h

    total = sum(totals, Decimal(0))
    if series:
        span = f"from {series[0].day.isoformat()} to {series[-1].day.isoformat()}"
        per_flow = {
            f: sum((d.revenue.get(f, Decimal(0)) for d in series), Decimal(0)) for f in flows
        }
        by_flow = "; ".join(f"{flow_title(f)} {amount(v, currency)}" for f, v in per_flow.items())
        best = max(range(len(series)), key=lambda i: totals[i])
        desc = f"Revenue per day {span}: {amount(total, currency)} in all"
        desc += f" ({by_flow})." if by_flow else "."
        if totals[best] > 0:
            best_day = series[best].day.isoformat()
            desc += f" The best day was {best_day} with {amount(totals[best], currency)}."
    else:
        desc = "No days to show."
    parts = _svg_open(width, height, id_prefix, f"Revenue per day and flow ({currency})", desc)

    # Grid and y axis.
    parts.append('<g class="axis y-axis" font-size="11" fill="#616161" text-anchor="end">')
    tick = Decimal(0)
    while tick <= axis_top:
        ty = _num(y(tick))
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}" stroke="{GRID_COLOR}"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{ty}" dy="4">{escape(_tick_label(tick))}</text>')
        tick += step
    parts.append("</g>")
    base = _num(top + plot_h)
    parts.append(
        f'<line class="x-axis" x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" '
        f'stroke="{AXIS_COLOR}"/>'
    )

    # Columns.
    slot = plot_w / max(len(series), 1)
    bar_w = min(max(slot * 0.7, 1.0), 48.0)
    every = _label_every(len(series))
    parts.append('<g class="bars">')
    for index, day in enumerate(series):
        x = left + index * slot + (slot - bar_w) / 2
        stacked = Decimal(0)
        for flow in flows:
            value = day.revenue.get(flow, Decimal(0))
            if value <= 0:
                continue
            y_top, y_bottom = y(stacked + value), y(stacked)
            stacked += value
            label = f"{day.day.isoformat()}, {flow_title(flow)}: {amount(value, currency)}"
            parts.append(
                f'<rect class="bar" data-flow="{escape(flow)}" x="{_num(x)}" y="{_num(y_top)}" '
                f'width="{_num(bar_w)}" height="{_num(max(y_bottom - y_top, 0.5))}" '
                f'fill="{flow_color(flow)}"><title>{escape(label)}</title></rect>'
            )
    parts.append("</g>")

    parts.append('<g class="axis x-labels" font-size="11" fill="#616161" text-anchor="middle">')
    for index, day in enumerate(series):
        if index % every == 0:
            cx = _num(left + index * slot + slot / 2)
            parts.append(
                f'<text x="{cx}" y="{_num(top + plot_h + 16)}">{escape(_day_label(day.day))}</text>'
            )
    parts.append("</g>")
    parts.extend(_legend(flows, left, height - 12))
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(flows: Sequence[str], x: int, y: int) -> list[str]:
    parts = ['<g class="legend" font-size="12" fill="#303030">']
    for flow in flows:
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" rx="2" fill="{flow_color(flow)}"/>'
        )
        parts.append(f'<text x="{x + 14}" y="{y}">{escape(flow_title(flow))}</text>')
        x += 28 + 7 * len(flow_title(flow))
    parts.append("</g>")
    return parts


def bars_per_flow(
    values: Sequence[tuple[str, Number]],
    *,
    title: str,
    format_value: Callable[[Number], str] = str,
    id_prefix: str = "flow-chart",
    width: int = 640,
) -> str:
    """A horizontal bar per flow, its name on the left and its value at the bar's end."""
    label_w, value_w, row_h, gap = 120, 110, 26, 10
    height = max(len(values), 1) * (row_h + gap) + gap
    biggest = max((Decimal(str(v)) for _, v in values), default=Decimal(0))
    room = width - label_w - value_w
    summary = "; ".join(f"{flow_title(flow)} {format_value(value)}" for flow, value in values)
    parts = _svg_open(width, height, id_prefix, title, f"{title}: {summary}." if values else "")
    parts.append('<g class="bars" font-size="13">')
    for index, (flow, value) in enumerate(values):
        y = gap + index * (row_h + gap)
        share = float(Decimal(str(value)) / biggest) if biggest > 0 else 0.0
        bar = max(room * share, 2.0 if share > 0 else 0.0)
        text = f"{flow_title(flow)}: {format_value(value)}"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4}" text-anchor="end" '
            f'fill="#303030">{escape(flow_title(flow))}</text>'
        )
        parts.append(
            f'<rect class="bar" data-flow="{escape(flow)}" x="{label_w}" y="{y}" '
            f'width="{_num(bar)}" height="{row_h}" rx="4" fill="{flow_color(flow)}">'
            f"<title>{escape(text)}</title></rect>"
        )
        parts.append(
            f'<text x="{_num(label_w + bar + 8)}" y="{y + row_h / 2 + 4}" '
            f'fill="{TEXT_COLOR}">{escape(format_value(value))}</text>'
        )
    parts.append("</g></svg>")
    return "\n".join(parts)
