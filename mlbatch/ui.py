"""What a person sees: step lines with timings, spinners on long waits, summary tables."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)
Say = Callable[[str], None]


def say(message: str) -> None:
    console.print(f"  {message}", markup=False)


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    """A live spinner on a terminal; a plain line in CI logs (rich decides)."""
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        console.print(f"  {message} ...", markup=False)
        yield


class Steps:
    """Times named steps and collects one summary row per step."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        console.print(f"[bold]▶ {name}[/bold]")
        outcome: list[str] = []
        start = time.monotonic()
        try:
            yield outcome
        finally:
            elapsed = time.monotonic() - start
            self.rows.append((name, "; ".join(outcome) or "failed", elapsed))
            console.print(f"  [dim]{name}: {elapsed:.1f}s[/dim]")

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left")
        table.add_column("step")
        table.add_column("outcome", overflow="fold")
        table.add_column("time", justify="right")
        for name, outcome, seconds in self.rows:
            table.add_row(name, outcome, f"{seconds:.1f}s")
        return table


def echo(line: str) -> None:
    """A line of the instance's console, as it came."""
    console.print(f"  │ {line}", markup=False)


def summary(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def width() -> int:
    """The columns a listing may take: the terminal's, else $COLUMNS, else 80 (CI logs, Rundeck)."""
    return shutil.get_terminal_size((80, 24)).columns


def columns(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    leave_out: Sequence[str] = (),
    shorten: str | None = None,
    fit: int | None = None,
) -> str:
    """Aligned columns under a header, one row a line: greppable, and no name, id or URI ever cut
    (it stays whole for copy and paste). Wider than `fit` (default: width()), the columns named
    in `leave_out` are left out, in that order, until the rest fits, and a last line names them
    (`--format json` and a wider terminal show everything); then the values of the `shorten`
    column (free text such as metrics, the last column) are cut with "…" to the width left."""
    lines = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    limit = width() if fit is None else fit
    shown = list(range(len(header)))

    def total() -> int:
        return sum(widths[i] for i in shown) + 2 * (len(shown) - 1)

    left_out: list[str] = []
    for name in leave_out:
        if total() <= limit:
            break
        shown.remove(list(header).index(name))
        left_out.append(name)
    if shorten is not None and total() > limit:
        cut = list(header).index(shorten)
        room = max(len(header[cut]), widths[cut] - (total() - limit))
        for line in lines[1:]:
            line[cut] = line[cut] if len(line[cut]) <= room else line[cut][: room - 1] + "…"
        widths[cut] = room
    text = "\n".join("  ".join(line[i].ljust(widths[i]) for i in shown).rstrip() for line in lines) + "\n"
    if left_out:
        text += f"(not shown at {limit} columns: {', '.join(left_out)}; see --format json)\n"
    return text


def emit(fmt: str, data: Any, render: Callable[[Any], RenderableType]) -> None:
    """A listing or a show: `render(data)` for people (format table), the data as JSON for machines."""
    if fmt == "json":
        print(json.dumps(data, indent=2, sort_keys=False, allow_nan=False))
    else:
        shown = render(data)
        if isinstance(shown, str):
            print(shown, end="" if shown.endswith("\n") else "\n")
        else:
            console.print(shown)
