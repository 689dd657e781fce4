"""Plots drawn on the server by matplotlib as SVG, inlined in the page: no script, no CDN.

Every text in a plot (param and metric names, a string param's values, release versions)
is plain text: mathtext is off for each of them, so a `$` in a value is shown, not parsed,
and matplotlib's SVG writer escapes what it writes. The data points are one group per plot,
`<g id="points-NAME">` holding a `<use>` per point, which the browser test counts.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Sequence
from typing import Any

_LOCK = threading.Lock()  # matplotlib's font cache and rc state are shared: one figure at a time
POINT = "#2f6db5"
STAR = "#d9480f"


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def gid(name: str) -> str:
    """An SVG id fragment from a param or metric name."""
    return re.sub(r"[^a-zA-Z0-9_-]", "-", name)


def scatter(
    points: Sequence[tuple[Any, float, bool]],
    x_label: str,
    y_label: str,
    name: str,
    order: Sequence[Any] | None = None,
    line: Sequence[tuple[Any, float]] = (),
) -> str:
    """An SVG scatter plot of (x, y, starred) points; x numeric, or categories in `order`
    (first appearance by default). `line` joins (x, y) pairs, e.g. each release's best."""
    import matplotlib
    from matplotlib.figure import Figure

    xs = [p[0] for p in points]
    categorical = not _numeric(xs) or not _numeric([x for x, _ in line])
    categories = list(order) if order is not None else list(dict.fromkeys(xs))

    def position(value: Any) -> float:
        return float(categories.index(value)) if categorical else float(value)

    # The salt makes the ids matplotlib derives (markers, clip paths) differ between plots
    # inlined in one page and stay the same between two renderings of one plot.
    with _LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"mlbatch-{name}"}):
        figure = Figure(figsize=(5.2, 3.3), layout="constrained")
        axes = figure.add_subplot()
        axes.set_gid(f"axes-{gid(name)}")
        if line:
            axes.plot([position(x) for x, _ in line], [y for _, y in line], color=POINT, alpha=0.45, linewidth=1.2)
        axes.plot(
            [position(p[0]) for p in points], [p[1] for p in points], "o", color=POINT, markersize=6, gid=f"points-{gid(name)}"
        )
        starred = [p for p in points if p[2]]
        if starred:
            axes.plot(
                [position(p[0]) for p in starred],
                [p[1] for p in starred],
                "*",
                color=STAR,
                markersize=15,
                gid=f"starred-{gid(name)}",
            )
        if categorical:
            axes.set_xticks(range(len(categories)), [str(c) for c in categories], parse_math=False)
            axes.set_xlim(-0.5, len(categories) - 0.5)
            if len(categories) > 6:
                axes.tick_params(axis="x", labelrotation=30)
        elif len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 50:
            axes.set_xscale("log")
        axes.set_xlabel(x_label, parse_math=False)
        axes.set_ylabel(y_label, parse_math=False)
        axes.grid(True, color="#dddddd", linewidth=0.6)
        axes.set_axisbelow(True)
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg") :]
