"""The people's form of `invoke runs` and `invoke runs.show` (the machine form is the dicts of
`mlbatch.run.inspect`, printed as JSON).

Tables fit 80 columns (CI logs, Rundeck output) and never split what a person copies: a
URI, an image or container reference goes on a line of its own, never into a table cell
that would fold it mid-word. The console does not wrap those lines (`ui.console` soft-wraps),
so a terminal narrower than the line wraps it only on screen and a copy gets it whole.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from mlbatch.core import runs
from mlbatch.core.text import visible
from mlbatch.ui import columns, summary

WIDTH = 80  # what a table may take: CI logs and Rundeck output are this wide


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_text(metrics: dict[str, Any], limit: int = 60) -> str:
    text = " ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in metrics.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _list_metrics(row: dict[str, Any]) -> str:
    sweep = row.get("sweep")
    if not sweep:
        return metrics_text(row["metrics"])
    if sweep["best_task"] is None:
        done = f"{sweep['succeeded']} of " if sweep["succeeded"] is not None else ""
        return f"sweep: {done}{sweep['tasks']} tasks succeeded" if done else f"sweep: {sweep['tasks']} tasks"
    metrics = dict(row["metrics"])
    ordered = ({sweep["metric"]: metrics.pop(sweep["metric"])} if sweep["metric"] in metrics else {}) | metrics
    prefix = f"best t{sweep['best_task']}: "
    return prefix + metrics_text(ordered, limit=60 - len(prefix))


def render_list(rows: list[dict[str, Any]]) -> str:
    """Aligned columns with a header, one run a line (greppable; --format json for machines); a
    sweep's metrics are its best task's, the ranking metric first."""
    lines = []
    for r in rows:
        seconds = f"{r['seconds']:.0f}s" if r["seconds"] is not None else "-"
        exit_code = "-" if r["exit_code"] is None else str(r["exit_code"])
        lines.append((r["run_id"], r["version"], r["created"][:19], r["status"], exit_code, seconds, _list_metrics(r)))
    return columns(
        ("RUN", "VERSION", "CREATED", "STATUS", "EXIT", "TIME", "METRICS"),
        lines,
        leave_out=("CREATED", "TIME", "VERSION", "EXIT"),  # a run id carries its start time
        shorten="METRICS",
    )


def _own_lines(rows: list[tuple[str, str]]) -> Text:
    """`key  value` lines that are never wrapped or cut: for URIs and references a person copies."""
    width = max(len(k) for k, _ in rows)
    return Text("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows), no_wrap=True, overflow="ignore")


def _width(table: Table) -> tuple[int, int]:
    """The narrowest and the widest the table can be drawn."""
    measured = Console(width=1000, file=io.StringIO()).measure(table)
    return measured.minimum, measured.maximum


def _tasks_table(view: dict[str, Any]) -> tuple[Table, bool]:
    """A sweep's tasks, best first: params, status, exit code, the ranking metric, results path.

    Params get a column each when the table then fits 80 columns unwrapped; else one column
    that wraps between params (never inside one); else the results column goes too (the
    results line below names the pattern). Returns the table and whether it has results."""
    sweep = view["sweep"]
    metric = sweep["metric"] or "metric"
    by_index = {t["task"]: t for t in sweep["tasks"]}
    ordered = [by_index[i] for i in sweep["ranking"] if i in by_index]
    ordered += [t for t in sweep["tasks"] if t["task"] not in sweep["ranking"]]
    names = sweep["swept"] or list(ordered[0]["params"] if ordered else [])
    cells = {t["task"]: [visible(str(t["params"].get(n, ""))) for n in names] for t in ordered}
    pairs = {i: [f"{n}={v}" for n, v in zip(names, values, strict=True)] for i, values in cells.items()}
    base = view["results"].removesuffix("tasks")

    def build(split: bool, results: bool) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")  # columns two spaces apart
        table.add_column("task", justify="right", no_wrap=True)
        if split:
            for name in names:
                table.add_column(name, justify="right", no_wrap=True)
        else:  # wide enough for the longest name=value: lines break between params, not inside one
            table.add_column("params", overflow="fold", min_width=max((len(p) for ps in pairs.values() for p in ps), default=6))
        for name, justify in (("status", "left"), ("exit", "right"), (metric, "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        if results:
            table.add_column("results", no_wrap=True)
        for t in ordered:
            params = cells[t["task"]] if split else [" ".join(pairs[t["task"]])]
            exit_code = "-" if t["exit_code"] is None else str(t["exit_code"])
            value = "-" if t["metric"] is None else _number(t["metric"])
            table.add_row(str(t["task"]), *params, t["status"], exit_code, value, *([t["results"].removeprefix(base)] * results))
        return table

    table = build(split=True, results=True)
    if _width(table)[1] <= WIDTH:
        return table, True
    table = build(split=False, results=True)
    if _width(table)[0] <= WIDTH:
        return table, True
    return build(split=False, results=False), False


def _sweep_parts(view: dict[str, Any]) -> list[RenderableType]:
    sweep = view["sweep"]
    ranked = f"; ranked by {sweep['metric']} ({sweep['metric_goal']})" if sweep["metric"] else ""
    parts: list[RenderableType] = [Text(f"tasks: {len(sweep['tasks'])}, at most {sweep['parallelism']} at once{ranked}")]
    table, with_results = _tasks_table(view)
    parts.append(table)
    lines = []
    best = next((t for t in sweep["tasks"] if t["task"] == sweep["best_task"]), None)
    if best is not None:
        params = " ".join(f"{n}={visible(str(best['params'][n]))}" for n in sweep["swept"] if n in best["params"])
        value = f"task {best['task']}: {sweep['metric']}={_number(best['metric'])}"
        lines.append(("best", value + (f" ({params})" if params else "")))
    for t in sweep["tasks"]:
        if t["message"] and t["status"] != "succeeded":
            lines.append((f"task {t['task']}", visible(t["message"])))
    base = view["results"].removesuffix("tasks")
    lines.append(("results", base if with_results else f"{base}tasks/<task>/results"))
    if sweep["summary"]:
        lines.append(("summary", sweep["summary"]))
    parts.append(_own_lines(lines))
    return parts


def _head(view: dict[str, Any]) -> list[tuple[str, str]]:
    s, c = view["spec"], view["cost"]
    took = f"{view['seconds']:.1f}s" if view["seconds"] is not None else "-"
    ended = f"{view['status']} (exit code {view['exit_code']})" if view["exit_code"] is not None else view["status"]
    sweep = view["sweep"]
    if sweep:
        shared = " ".join(f"{k}={v}" for k, v in sweep["shared_params"].items())
        params = f"{', '.join(sweep['swept']) or 'none'} swept over {len(sweep['tasks'])} tasks"
        params += f"; {shared}" if shared else ""
    else:
        params = " ".join(f"{k}={v}" for k, v in s["params"].items()) or "-"
    head = [
        ("job", view["job"]),
        ("ended", ended + (f": {visible(view['message'])}" if view["message"] else "")),
        ("created", view["created"]),
        ("took", took),
        ("params", visible(params)),
        ("argv", " ".join(s["argv"])),
        ("timeout", f"{s['timeout_seconds']}s"),
    ]
    if s["idempotency_key"]:
        head.append(("trigger key", s["idempotency_key"]))
    usd = c["estimated_usd"]
    if sweep:
        counted = sweep["priced_tasks"]
        cost = f"${usd:.4f} for {counted} of {len(sweep['tasks'])} tasks as {sweep['priced_as'] or '?'}"
        head.append(("est. cost", cost if counted else "unknown (no task has ended, or not in the price table)"))
    else:
        unknown = "unknown (machine type or region not in the price table)"
        head.append(("est. cost", f"${usd:.4f}" if usd is not None else unknown))
    return head


def _attempt_table(a: dict[str, Any]) -> Table:
    exit_code = f" (exit code {a['exit_code']})" if a.get("exit_code", -1) not in (-1, None) else ""
    where = f"{a.get('zone', '?')}, {a.get('provisioning', '?')}, {a.get('machine_type', '?')}" + (
        f", {a['gpus']}" if a.get("gpus") else ""
    )
    rows = [("instance", a.get("instance", "?") + (" (detached)" if a.get("detached") else "")), ("where", where)]
    rows.append(("ended", a["status"] + exit_code + (f": {visible(a['message'])}" if a.get("message") else "")))
    rows.append(("phases", " · ".join(f"{p} {s:.1f}s" for p, s in runs.phases_in_order(a["phases"])) or "-"))
    if a.get("seconds") is not None:
        cost = (
            f"${a['cost_usd']:.4f} as {a['priced_as']}"
            if a.get("cost_usd") is not None
            else f"not in the price table ({a['priced_as']})"
        )
        rows.append(("billed", f"{a['seconds']:.1f}s, {cost}"))
    return summary(f"attempt {a['attempt']}", rows)


def render_show(view: dict[str, Any]) -> Group:
    p, c = view["provenance"], view["cost"]
    parts: list[RenderableType] = [summary(f"run {view['run_id']}", _head(view))]
    if view["sweep"]:
        parts += _sweep_parts(view)
    else:
        parts.append(_own_lines([("results", view["results"])]))
    release = p["release"] + (f" (git {p['git_sha'][:12]})" if p["git_sha"] else "")
    parts.append(summary("provenance", [("release", release), ("agent", p["agent"] or "-")]))
    parts.append(
        _own_lines(
            [("vm image", p["vm_image"]), ("container", p["container"]), ("code", p["code"]), ("code sha256", p["code_sha256"])]
        )
    )
    parts += [_attempt_table(a) for a in view["attempts"]]
    if view["metrics"]:
        parts.append(summary("metrics", [(k, str(v)) for k, v in view["metrics"].items()]))
    parts.append(Text(f"cost: {c['note']}.", no_wrap=False, overflow="fold"))
    parts.append(_own_lines([("prices", c["prices"])]))
    return Group(*parts)
