"""Charts drawn on the server as SVG geometry, for both portals; templates only place the shapes.

No chart library and no script: the pages' CSP allows neither inline scripts nor
inline styles, so each bar is a ``<rect>`` with its coordinates as attributes and a
class that keycore.css colours; hovering shows the SVG ``<title>``. Two kinds:
labelled bars and columns (:func:`horizontal_bars`, :func:`columns`: the vendor's
dashboard, templates/includes/chart_bars.html and chart_columns.html), and bars per
day stacked by series (:func:`key_use_charts`: the tenant's overview,
templates/tenant_portal/_chart.html).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

# --- labelled bars and columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    css: str = ""
    href: str = ""
    #: where the value's text goes
    text_x: float = 0
    text_y: float = 0
    #: where the label goes (horizontal bars: left of the bar, right-aligned)
    label_x: float = 0


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    title: str

    @property
    def description(self) -> str:
        return "; ".join(f"{b.label}: {b.value}" for b in self.bars)


def horizontal_bars(
    title: str,
    items: list[tuple[str, int, str, str]],
    *,
    width: int = 300,
    label_width: int = 110,
    bar_height: int = 18,
    gap: int = 8,
) -> BarChart:
    """One labelled bar per (label, value, css class, link), longest bar = the largest value."""
    top = max((value for _, value, _, _ in items), default=0) or 1
    room = width - label_width - 60
    bars = []
    for i, (label, value, css, href) in enumerate(items):
        y = i * (bar_height + gap)
        length = max(2.0, room * value / top) if value else 0.0
        bars.append(
            Bar(
                label,
                value,
                label_width,
                y,
                round(length, 1),
                bar_height,
                css,
                href,
                round(label_width + length + 6, 1),
                y + bar_height * 0.72,
                label_width - 8,
            )
        )
    height = max(bar_height, len(items) * (bar_height + gap) - gap)
    return BarChart(width, height, bars, title)


def columns(title: str, items: list[tuple[str, int]], *, width: int = 360, height: int = 90, gap: int = 4) -> BarChart:
    """A column per (label, value), e.g. one per week; the tallest column = the largest value."""
    top = max((value for _, value in items), default=0) or 1
    plot = height - 14  # room for the value labels above the columns
    step = width / max(1, len(items))
    bars = []
    for i, (label, value) in enumerate(items):
        h = max(1.0, plot * value / top) if value else 0.0
        x = i * step + gap / 2
        bar_width = step - gap
        bars.append(
            Bar(
                label,
                value,
                round(x, 1),
                round(height - h, 1),
                round(bar_width, 1),
                round(h, 1),
                text_x=round(x + bar_width / 2, 1),
                text_y=round(max(10.0, height - h - 3), 1),
            )
        )
    return BarChart(width, height, bars, title)


# --- bars per day, stacked by series --------------------------------------------------------------

WIDTH = 420  # drawn about this wide: three charts side by side on a laptop screen
HEIGHT = 200
LEFT = 44  # room for the y-axis labels
RIGHT = 6
TOP = 10
BOTTOM = 24  # room for the date labels
BAR_FILL = 0.72  # share of a day's slot its bar takes
#: data labels drawn as their own series; the rest are summed into "other labels"
TOP_LABELS = 5
OTHER = "other labels"
NO_LABEL = "(no label)"


@dataclass
class Segment:
    x: float
    y: float
    width: float
    height: float
    series: int
    title: str


@dataclass
class StackedChart:
    title: str
    total: int
    peak: int
    segments: list[Segment] = field(default_factory=list)
    gridlines: list[tuple[float, str]] = field(default_factory=list)
    day_labels: list[tuple[float, str, str]] = field(default_factory=list)  # x, text, text-anchor
    legend: list[tuple[int, str, int]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    baseline: float = HEIGHT - BOTTOM


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 × 10ⁿ at or above ``value`` (at least 1), so gridlines fall on round numbers."""
    if value <= 1:
        return 1
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * exponent >= value:
            return step * exponent
    return 10 * exponent  # pragma: no cover - the loop always returns


def _short(value: float) -> str:
    """Axis numbers that fit the margin: 950, 1.5k, 20k, 3M."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _label(value: str) -> str:
    return value or NO_LABEL


def series_order(rows: list[dict], *, key: str) -> list[str]:
    """The names to draw as series, largest first; at most TOP_LABELS plus OTHER."""
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[_label(row[key])] += row["n"]
    names = sorted(totals, key=lambda name: (-totals[name], name))
    if len(names) > TOP_LABELS:
        return [*names[:TOP_LABELS], OTHER]
    return names


def stacked_daily(title: str, days: list[date], rows: list[dict], *, key: str, series: list[str]) -> StackedChart:
    """One bar per day, stacked by ``series`` (values of ``rows[i][key]``; unknown ones go to OTHER)."""
    index = {name: i for i, name in enumerate(series)}
    per_day: dict[date, dict[int, int]] = {day: defaultdict(int) for day in days}
    for row in rows:
        if row["day"] not in per_day:
            continue
        name = _label(row[key])
        slot = index.get(name, index.get(OTHER))
        if slot is None:
            continue
        per_day[row["day"]][slot] += row["n"]
    day_totals = {day: sum(counts.values()) for day, counts in per_day.items()}
    peak = max(day_totals.values(), default=0)
    scale_top = _nice_ceiling(peak)
    chart = StackedChart(title=title, total=sum(day_totals.values()), peak=peak)
    plot_height = chart.baseline - TOP
    slot_width = (chart.plot_right - chart.plot_left) / max(1, len(days))
    bar_width = slot_width * BAR_FILL
    for fraction in (0, 0.5, 1):
        value = scale_top * fraction
        chart.gridlines.append((chart.baseline - plot_height * fraction, _short(value)))
    for i, day in enumerate(days):
        x = chart.plot_left + i * slot_width + (slot_width - bar_width) / 2
        if (len(days) - 1 - i) % 7 == 0:  # weekly, counted back from today, so today is always labelled
            last = i == len(days) - 1
            # today's label ends at its bar, so it never runs off the right edge
            chart.day_labels.append(
                (
                    round(x + (bar_width if last else bar_width / 2), 2),
                    day.strftime("%b %d"),
                    "end" if last else "middle",
                )
            )
        y = chart.baseline
        for slot in sorted(per_day[day]):
            count = per_day[day][slot]
            if not count:
                continue
            height = plot_height * count / scale_top
            y -= height
            chart.segments.append(
                Segment(
                    x=round(x, 2),
                    y=round(y, 2),
                    width=round(bar_width, 2),
                    height=round(max(height, 0.5), 2),
                    series=slot,
                    title=f"{day:%Y-%m-%d}: {count:,} × {series[slot]}",
                )
            )
    totals: dict[int, int] = defaultdict(int)
    for counts in per_day.values():
        for slot, count in counts.items():
            totals[slot] += count
    chart.legend = [(i, name, totals.get(i, 0)) for i, name in enumerate(series) if totals.get(i, 0)]
    return chart


def key_use_charts(days: list[date], rows: list[dict]) -> dict:
    """The overview's three charts (encrypts and decrypts by data label, refusals by reason) and a summary table."""
    ok = [r for r in rows if r["result"] == "ok"]
    encrypts = [r for r in ok if r["operation"] == "encrypt"]
    decrypts = [r for r in ok if r["operation"] == "decrypt"]
    refused = [r for r in rows if r["result"] != "ok"]
    # one colour per data label across both charts
    labels = series_order(encrypts + decrypts, key="label")
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        if row["operation"] == "rekey_in":
            continue  # the arriving side of a rekey: the "rekey" row of the same call already counts it
        operation = row["operation"]
        column = operation if row["result"] == "ok" else "refused"
        table[_label(row["label"])][column] += row["n"]
    return {
        "encrypts": stacked_daily("Encrypts per day", days, encrypts, key="label", series=labels),
        "decrypts": stacked_daily("Decrypts per day", days, decrypts, key="label", series=labels),
        "refused": stacked_daily(
            "Refused per day, by reason", days, refused, key="result", series=series_order(refused, key="result")
        ),
        "by_label": sorted(
            ((label, dict(counts)) for label, counts in table.items()), key=lambda item: -sum(item[1].values())
        ),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
    }
