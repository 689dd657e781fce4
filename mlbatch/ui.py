"""What a person sees: step lines with timings, spinners on long waits, summary tables."""

from __future__ import annotations

import contextlib
import json
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


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns under a header, one row a line: greppable, and cut by nothing (a URI
    stays whole for copy and paste); `--format json` gives the same for machines."""
    lines = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines) + "\n"


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
