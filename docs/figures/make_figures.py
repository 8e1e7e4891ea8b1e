"""Draw the layout pictures of the Concepts page from real seqbatch batches.

Each picture is plain SVG written by this script, so the same seqbatch always gives the same
bytes. The SVG files are committed beside it; ``tests/test_docs.py`` runs :func:`figures`
and checks that the committed files are what it draws now. After changing the layout code
or this script, redraw them with::

    python docs/figures/make_figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import seqbatch

HERE = Path(__file__).resolve().parent

CELL = 18  # side of one step, in pixels
ROW_GAP = 8  # between streams
BATCH_GAP = 14  # between batches
LEFT = 78  # room for the stream labels
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
# One colour per stream (first picture) or per series (second picture).
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f", "#499894", "#d37295"]
UNUSED = "#d9d9d9"
RESET = "#d62728"


class Svg:
    """A tiny SVG writer: elements are appended as text, in drawing order."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, idle: bool = False) -> None:
        stroke = 'stroke="#888888" stroke-dasharray="2,2"' if idle else 'stroke="#ffffff"'
        self.parts.append(
            f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" fill="{fill}" '
            f'{stroke} stroke-width="1"/>'
        )

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: int = 10,
        anchor: str = "middle",
        fill: str = "#222222",
        weight: str = "normal",
    ) -> None:
        self.parts.append(
            f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}" {FONT}>{s}</text>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str, width: float) -> None:
        self.parts.append(
            f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{color}" '
            f'stroke-width="{width:g}"/>'
        )

    def render(self, width: float, height: float, title: str) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
            f'viewBox="0 0 {width:g} {height:g}" role="img">\n<title>{title}</title>\n'
            '<defs><pattern id="pad" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#bbbbbb" stroke-width="2"/>'
            "</pattern></defs>\n"
            f'<rect width="{width:g}" height="{height:g}" fill="#ffffff"/>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


def draw_batches(svg: Svg, batches: seqbatch.StreamBatcher, top: float, colour_by: str) -> float:
    """Draw every batch of an epoch as a column of windows; return the bottom edge.

    A cell is one step and shows the value of ``x`` there (the test data is its own step
    number). Padding is hatched, an idle stream is blank, a reset is a red bar on the left of
    the step it comes before (packed batches: of any step, else of the window).
    """
    W = batches.sequence_length
    width = W * CELL
    svg.text(LEFT - 10, top + 10, "batch", anchor="end", size=10, weight="bold")
    for k in range(len(batches)):
        svg.text(LEFT + k * (width + BATCH_GAP) + width / 2, top + 10, f"k = {k}", size=10)
    top += 18
    for k, b in enumerate(batches):
        x0 = LEFT + k * (width + BATCH_GAP)
        for i in range(batches.batch_size):
            y0 = top + i * (CELL + ROW_GAP)
            series = int(b.series[i])
            for j in range(W):
                cx = x0 + j * CELL
                step_series = series if b.step_series is None else int(b.step_series[i, j])
                colour = PALETTE[(i if colour_by == "stream" else step_series) % len(PALETTE)]
                if series < 0:
                    svg.rect(cx + 1, y0 + 1, CELL - 2, CELL - 2, "#ffffff", idle=True)
                elif b.sample_weight[i, j] == 0:
                    svg.rect(cx, y0, CELL, CELL, "url(#pad)")
                else:
                    svg.rect(cx, y0, CELL, CELL, colour)
                    svg.text(cx + CELL / 2, y0 + 12.5, str(int(b.x[i, j])), size=8, fill="#ffffff")
            flags = b.reset[i : i + 1] if b.step_reset is None else b.step_reset[i]
            for j in np.flatnonzero(flags).tolist():
                cx = x0 + j * CELL
                svg.line(cx + 1.5, y0 - 2, cx + 1.5, y0 + CELL + 2, RESET, 3)
    for i in range(batches.batch_size):
        svg.text(LEFT - 10, top + i * (CELL + ROW_GAP) + 12.5, f"stream {i}", anchor="end")
    return top + batches.batch_size * (CELL + ROW_GAP)


def legend(svg: Svg, left: float, top: float, items: list[tuple[str, str]]) -> None:
    """Draw a one-line legend of (kind, label) pairs, kind in reset/pad/idle/unused."""
    x = left
    for kind, label in items:
        if kind == "reset":
            svg.line(x + 1.5, top - 2, x + 1.5, top + 14, RESET, 3)
        elif kind == "pad":
            svg.rect(x, top, 12, 12, "url(#pad)")
        elif kind == "idle":
            svg.rect(x, top, 12, 12, "#ffffff", idle=True)
        else:
            svg.rect(x, top, 12, 12, UNUSED)
        svg.text(x + 18, top + 10, label, anchor="start", size=10)
        x += 24 + 6.2 * len(label)


def one_series() -> str:
    """One series of 50 steps, next-step targets, 3 streams, windows of 4 steps."""
    T, B, W = 50, 3, 4
    batches = seqbatch.StreamBatcher(np.arange(T), targets="next", batch_size=B, sequence_length=W)
    plan = batches.plan
    svg = Svg()
    svg.text(
        LEFT,
        16,
        "the data: one series of 50 steps (the value of a step is its index)",
        anchor="start",
        size=11,
        weight="bold",
    )
    # The series as one strip, each step coloured by the stream that holds it.
    table = plan.table()
    owner = np.full(T, -1)
    for k in range(len(plan)):
        for i in range(B):
            s = int(table.start[k, i])
            owner[s : s + int(table.length[k, i])] = i
    cell = 12
    for t in range(T):
        fill = PALETTE[owner[t]] if owner[t] >= 0 else UNUSED
        svg.rect(LEFT + t * cell, 26, cell, cell, fill)
        if t % 8 == 0 or t == T - 1:
            svg.text(LEFT + t * cell + cell / 2, 52, str(t), size=8)
    svg.text(LEFT - 10, 36, "steps", anchor="end")
    a = plan.accounting
    svg.text(
        LEFT,
        70,
        f"{a.used} steps used in {len(plan)} batches; step 48 is dropped (it does not fill a "
        "window), step 49 has no next step to predict",
        anchor="start",
        size=10,
    )
    svg.text(
        LEFT,
        92,
        "the batches: row i of batch k + 1 continues row i of batch k",
        anchor="start",
        size=11,
        weight="bold",
    )
    bottom = draw_batches(svg, batches, 100, colour_by="stream")
    legend(
        svg, LEFT, bottom + 6, [("reset", "reset: state zeroed first"), ("unused", "not an input")]
    )
    width = LEFT + T * cell + 20
    return svg.render(width, bottom + 30, "One series cut into 3 streams over 4 batches")


def unequal_series() -> str:
    """Six series of 10, 7, 6, 5, 3 and 2 steps on 3 streams, windows of 3, padded."""
    lengths = [10, 7, 6, 5, 3, 2]
    data = [np.arange(n) for n in lengths]
    batches = seqbatch.StreamBatcher(
        data, targets=None, batch_size=3, sequence_length=3, remainder="pad"
    )
    svg = Svg()
    svg.text(
        LEFT,
        16,
        "the data: six series of unequal lengths (a value is its step in its series)",
        anchor="start",
        size=11,
        weight="bold",
    )
    cell = 14
    for s, n in enumerate(lengths):
        y = 26 + s * (cell + 3)
        svg.text(LEFT - 10, y + 10.5, f"series {s}", anchor="end")
        for t in range(n):
            svg.rect(LEFT + t * cell, y, cell, cell, PALETTE[s])
    top = 26 + len(lengths) * (cell + 3) + 22
    svg.text(
        LEFT,
        top,
        "the batches: longest first onto the least loaded stream; a series never leaves its stream",
        anchor="start",
        size=11,
        weight="bold",
    )
    bottom = draw_batches(svg, batches, top + 8, colour_by="series")
    legend(
        svg,
        LEFT,
        bottom + 6,
        [
            ("reset", "reset: a new series starts"),
            ("pad", "padding: sample_weight 0"),
            ("idle", "idle stream"),
        ],
    )
    width = LEFT + len(batches) * (3 * CELL + BATCH_GAP) + 260
    return svg.render(width, bottom + 30, "Six unequal series dealt onto 3 streams")


def packed_series() -> str:
    """The six series of :func:`unequal_series`, packed end to end in each stream."""
    lengths = [10, 7, 6, 5, 3, 2]
    data = [np.arange(n) for n in lengths]
    shape = dict(targets=None, batch_size=3, sequence_length=3, remainder="pad")
    reset = seqbatch.StreamBatcher(data, **shape)
    batches = seqbatch.StreamBatcher(data, series_boundary="pack", **shape)
    svg = Svg()
    svg.text(
        LEFT,
        16,
        "series_boundary='pack': each stream holds its series end to end; a series starts at "
        "any step",
        anchor="start",
        size=11,
        weight="bold",
    )
    bottom = draw_batches(svg, batches, 24, colour_by="series")
    padded = [b.plan.accounting.padded for b in (batches, reset)]
    svg.text(
        LEFT,
        bottom + 8,
        f"{len(batches)} batches and {padded[0]} padded slots, where series_boundary='reset' "
        f"takes {len(reset)} batches and pads {padded[1]} slots",
        anchor="start",
        size=10,
    )
    legend(
        svg,
        LEFT,
        bottom + 22,
        [("reset", "reset: state zeroed before this step"), ("pad", "padding: sample_weight 0")],
    )
    width = LEFT + len(batches) * (3 * CELL + BATCH_GAP) + 300
    return svg.render(width, bottom + 46, "Six unequal series packed onto 3 streams")


def figures() -> dict[str, str]:
    """Every picture, by file name."""
    return {
        "one-series.svg": one_series(),
        "unequal-series.svg": unequal_series(),
        "packed-series.svg": packed_series(),
    }


def main() -> int:
    for name, text in figures().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
