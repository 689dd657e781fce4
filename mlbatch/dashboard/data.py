"""What the dashboard shows, read from the bucket and never written to it.

Runs, their phases and costs, and sweeps come from `mlbatch.run.inspect` (the same dicts as
`invoke runs --json` and `invoke runs.show --json`); logs from `mlbatch.run.records`; a job's
metric across releases from the run list. The bucket is wrapped in `ReadOnlyBucket`, so no
page can write to it whatever a bug asks.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import MlbatchError, NotFound
from mlbatch.core.names import job_of_run_id
from mlbatch.core.text import visible
from mlbatch.core.versions import sort_key
from mlbatch.run import inspect
from mlbatch.run.prices import PriceTable
from mlbatch.run.records import log_parts

DEFAULT_LIMIT = 200  # runs on the index page, newest first
LOG_PART_LIMIT = 1024 * 1024  # bytes of one log shown: its head and its tail, the middle counted
MAX_PLOTTED_METRICS = 4  # a job whose catalog names no metric: at most this many of its numeric ones


class ReadOnly(PermissionError):
    """The dashboard asked to change the bucket: a bug, refused."""


class ReadOnlyBucket:
    """A Bucket's reads only; every write raises ReadOnly.

    Records that never change once written (spec.json and result.json, written only if
    absent; release manifests, immutable) are kept after their first read, so a page over a
    gs:// bucket asks again only for what may still change.
    """

    FINAL = ("/spec.json", "/result.json", "/manifest.json")
    MAX_CACHED = 50_000

    def __init__(self, bucket: Bucket):
        self._bucket = bucket
        self.uri = bucket.uri
        self._final: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start or end is not None or not key.endswith(self.FINAL):
            return self._bucket.read(key, start, end)
        with self._lock:
            if key in self._final:
                return self._final[key]
        data = self._bucket.read(key)
        with self._lock:
            if len(self._final) >= self.MAX_CACHED:
                self._final.clear()
            self._final[key] = data
        return data

    def size(self, key: str) -> int:
        return self._bucket.size(key)

    def exists(self, key: str) -> bool:
        return self._bucket.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self._bucket.list(prefix)

    def url(self, key: str) -> str:
        return self._bucket.url(key)

    def read_generation(self, key: str) -> tuple[bytes | None, int]:
        return self._bucket.read_generation(key)

    def download(self, key: str, path: Path) -> None:
        self._bucket.download(key, path)

    def _refuse(self, key: str) -> ReadOnly:
        return ReadOnly(f"the dashboard is read-only: it may not change {self.url(key)}")

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        raise self._refuse(key)

    def append(self, key: str, data: bytes, *, at: int) -> None:
        raise self._refuse(key)

    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None:
        raise self._refuse(key)

    def write_if_generation(self, key: str, data: bytes, generation: int) -> None:
        raise self._refuse(key)


@dataclasses.dataclass(frozen=True)
class Source:
    """The bucket the dashboard reads and how it prices runs (as `invoke runs.show` does)."""

    bucket: Bucket
    prices: PriceTable
    region: str = ""  # prices a gcp sweep's Batch VMs: the profile's region
    limit: int = DEFAULT_LIMIT

    @classmethod
    def of(cls, bucket: Bucket, prices: PriceTable, region: str = "", limit: int = DEFAULT_LIMIT) -> Source:
        return cls(ReadOnlyBucket(bucket), prices, region, limit)


def phase_bar(phases: dict[str, float]) -> list[dict[str, Any]]:
    """Each phase's share of the run's time, in run order: [{phase, seconds, start, share}] (0..1)."""
    total = sum(phases.values())
    bar, start = [], 0.0
    for name, seconds in runs.phases_in_order(phases):
        share = seconds / total if total else 0.0
        bar.append({"phase": name, "seconds": seconds, "start": start, "share": share})
        start += share
    return bar


def _run_phases(view: dict[str, Any]) -> dict[str, float]:
    """A run's phases over its attempts (a retried phase counts each time it ran)."""
    total: dict[str, float] = collections.defaultdict(float)
    for attempt in view["attempts"]:
        for name, seconds in attempt["phases"].items():
            total[name] += seconds
    return dict(total)


def run_list(source: Source) -> dict[str, Any]:
    """The index: the newest runs with status, phases and cost; every job."""
    rows = inspect.list_runs(source.bucket)
    shown = list(reversed(rows))[: source.limit]
    out = []
    for row in shown:
        try:
            view: dict[str, Any] | None = inspect.show(source.bucket, row["run_id"], source.prices, source.region)
        except MlbatchError as exc:  # one bad record must not hide the other runs
            view, row = None, {**row, "problem": str(exc)}
        out.append(
            {
                **row,
                "cost_usd": view["cost"]["estimated_usd"] if view else None,
                "phases": phase_bar(_run_phases(view)) if view and not view["sweep"] else [],
            }
        )
    statuses = collections.Counter(r["status"] for r in rows)
    return {
        "bucket": source.bucket.uri,
        "runs": out,
        "total": len(rows),
        "jobs": sorted({r["job"] for r in rows}),
        "statuses": dict(sorted(statuses.items())),
    }


def metric_name(sweep: dict[str, Any]) -> str:
    """What a sweep's plot shows: the catalog's metric, else the first numeric metric a task wrote."""
    if sweep["metric"]:
        return str(sweep["metric"])
    numeric = sorted({k for t in sweep["tasks"] for k, v in t["metrics"].items() if inspect.metric_value({k: v}, k) is not None})
    return numeric[0] if numeric else ""


def sweep_points(sweep: dict[str, Any], metric: str) -> dict[str, list[tuple[Any, float, bool]]]:
    """For each swept param: (the task's value of it, its metric, whether it is the best task)."""
    points: dict[str, list[tuple[Any, float, bool]]] = {}
    for param in sweep["swept"]:
        points[param] = [
            (t["params"][param], value, t["task"] == sweep["best_task"])
            for t in sweep["tasks"]
            if param in t["params"] and (value := inspect.metric_value(t["metrics"], metric)) is not None
        ]
    return points


def run_detail(source: Source, run_id: str) -> dict[str, Any]:
    """One run as `invoke runs.show --json` has it, with phase bars; a sweep's points to plot."""
    view = inspect.show(source.bucket, run_id, source.prices, source.region)
    for attempt in view["attempts"]:
        attempt["bar"] = phase_bar(attempt["phases"])
    detail: dict[str, Any] = {"view": view, "metric": "", "points": {}}
    if view["sweep"]:
        for task in view["sweep"]["tasks"]:
            task["bar"] = phase_bar(task["phases"])
        detail["metric"] = metric_name(view["sweep"])
        detail["points"] = sweep_points(view["sweep"], detail["metric"])
    return detail


def _shown(data: bytes) -> str:
    return visible(data.decode(errors="replace"))


def run_log(source: Source, run_id: str) -> dict[str, Any]:
    """Every log of the run, control characters made visible (as `invoke logs` on a terminal);
    a log larger than LOG_PART_LIMIT shows its head and tail, read by byte ranges."""
    parts = []
    for heading, key in log_parts(source.bucket, run_id):
        size = source.bucket.size(key)
        if size <= LOG_PART_LIMIT:
            head, tail, hidden = source.bucket.read(key), b"", 0
        else:
            half = LOG_PART_LIMIT // 2
            head, tail, hidden = source.bucket.read(key, 0, half), source.bucket.read(key, size - half, size), size - 2 * half
        anchor = heading.strip("= \n").replace(" ", "-")  # "attempt-1", "task-3", "task-3-attempt-2"
        parts.append(
            {"heading": heading.strip("= \n"), "anchor": anchor, "head": _shown(head), "tail": _shown(tail), "hidden": hidden}
        )
    return {"run_id": run_id, "job": job_of_run_id(run_id), "parts": parts, "url": source.bucket.url(runs.run_prefix(run_id))}


def job_history(source: Source, job: str) -> dict[str, Any]:
    """A job's metric across releases: every ended run's value (a sweep's: its best task's), by release."""
    rows = [r for r in inspect.list_runs(source.bucket, job=job) if r["status"] != inspect.RUNNING]
    if not rows and not any(True for _ in source.bucket.list(f"runs/{job}")):
        raise NotFound(f"job {job} has no runs in {source.bucket.uri}")
    versions = sorted({r["version"] for r in rows}, key=sort_key)
    metrics, goal = _job_metrics(source, job, versions, rows)
    series: dict[str, list[dict[str, Any]]] = {m: [] for m in metrics}
    for r in rows:
        for m in metrics:
            if (value := inspect.metric_value(r["metrics"], m)) is not None:
                series[m].append({"version": r["version"], "value": value, "run_id": r["run_id"], "sweep": bool(r["sweep"])})
    pick = max if goal == "max" else min
    releases = []
    for version in versions:
        of_release = [r for r in rows if r["version"] == version]
        values = [p["value"] for p in series[metrics[0]] if p["version"] == version] if metrics else []
        releases.append(
            {
                "version": version,
                "runs": len(of_release),
                "succeeded": sum(1 for r in of_release if r["status"] == runs.SUCCEEDED),
                "best": pick(values) if values else None,
                "newest": of_release[-1]["run_id"],
            }
        )
    return {"job": job, "metrics": metrics, "goal": goal, "versions": versions, "series": series, "releases": releases}


def _job_metrics(source: Source, job: str, versions: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The newest release's catalog metric and goal; without one, the numeric metrics the runs wrote."""
    for version in reversed(versions):
        try:
            entry = manifests.load(source.bucket, version).jobs.get(job)
        except MlbatchError:
            continue
        if entry and entry.metric:
            return [entry.metric], entry.metric_goal
        break
    names = sorted({k for r in rows for k, v in r["metrics"].items() if inspect.metric_value({k: v}, k) is not None})
    return names[:MAX_PLOTTED_METRICS], "max"
