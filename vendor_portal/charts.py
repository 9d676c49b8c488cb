"""Small charts drawn on the server as SVG geometry; templates only place the shapes.

No JavaScript and no style attributes (the CSP allows neither): bars are ``<rect>``
elements with coordinates computed here and colours from CSS classes.
"""

from __future__ import annotations

from dataclasses import dataclass


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
class Chart:
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
) -> Chart:
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
    return Chart(width, height, bars, title)


def columns(title: str, items: list[tuple[str, int]], *, width: int = 360, height: int = 90, gap: int = 4) -> Chart:
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
    return Chart(width, height, bars, title)
