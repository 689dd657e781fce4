"""A sweep's tasks best first by the catalog's metric: the order of `sweep.json`'s ranking,
`summary.csv` and the table `run-batch --sweep` prints."""

from __future__ import annotations

import csv
import io
from typing import Any

from mlbatch.core import runs
from mlbatch.core.catalog import Job
from mlbatch.core.sweeps import TaskRecord


def rank(outcomes: list[TaskRecord], job: Job) -> list[TaskRecord]:
    """Best first by the catalog's metric: succeeded tasks with the metric, then the others by index."""

    def key(o: TaskRecord) -> tuple[int, float, int]:
        value = o.metrics.get(job.metric) if job.metric else None
        if o.status != runs.SUCCEEDED or isinstance(value, bool) or not isinstance(value, int | float):
            return (1, 0.0, o.index)
        return (0, -float(value) if job.metric_goal == "max" else float(value), o.index)

    return sorted(outcomes, key=key)


def swept_names(tasks: list[dict[str, Any]]) -> list[str]:
    """The params that differ between tasks: the columns worth showing."""
    return [k for k in tasks[0] if len({repr(t[k]) for t in tasks}) > 1] if tasks else []


def _columns(outcomes: list[TaskRecord]) -> tuple[list[str], list[str]]:
    params = list(outcomes[0].params) if outcomes else []
    metrics: list[str] = []
    for o in outcomes:
        metrics += [m for m in o.metrics if m not in metrics]
    return params, metrics


def summary_csv(ranked: list[TaskRecord]) -> str:
    """One row per task, best first. Params and metrics are named `param.NAME` and
    `metric.NAME`: a job may write a metric named like a param (n_estimators) or like a fixed
    column (status), and a header naming two columns alike cannot be read back."""
    params, metrics = _columns(ranked)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["rank", "task", *(f"param.{p}" for p in params), "status", "exit_code", "attempts"]
    writer.writerow(header + [f"metric.{m}" for m in metrics])
    for rank_, o in enumerate(ranked, 1):
        row = [rank_, o.index, *(o.params[p] for p in params), o.status, o.exit_code, o.attempts]
        writer.writerow(row + [o.metrics.get(m, "") for m in metrics])
    return out.getvalue()


def summary_table(ranked: list[TaskRecord], title: str):
    """params -> status -> metrics, best first: only the params that vary, all the metrics."""
    from rich.table import Table

    params = swept_names([o.params for o in ranked]) or list(ranked[0].params if ranked else [])
    _, metrics = _columns(ranked)
    table = Table(title=title, title_justify="left")
    for column in ["#", "task", *params, "status", "exit", *metrics]:
        table.add_column(column, justify="left" if column == "status" else "right")
    for rank_, o in enumerate(ranked, 1):
        cells = [str(rank_), str(o.index), *(str(o.params[p]) for p in params), o.status, str(o.exit_code)]
        table.add_row(*cells, *(str(o.metrics.get(m, "")) for m in metrics))
    return table


def ranked_table(outcomes: list[TaskRecord], job: Job, run_id: str):
    """The table `run-batch --sweep` prints: every task, best first, titled with what ranks them."""
    by = f", best first by {job.metric} ({job.metric_goal})" if job.metric else ""
    return summary_table(rank(outcomes, job), f"sweep {run_id}{by}")
