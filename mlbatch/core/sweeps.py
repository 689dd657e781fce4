"""Sweeps (docs/architecture.md, "Sweeps"): one run, N tasks, each with its own params set.

runs/<job>/<run_id>/spec.json              the run's spec plus every task's params and argv
runs/<job>/<run_id>/tasks/<i>/log          task i's log, flushed while it runs
runs/<job>/<run_id>/tasks/<i>/progress.json  the phase its agent is in
runs/<job>/<run_id>/tasks/<i>/results/...  what task i wrote to $MLBATCH_RESULTS_DIR
runs/<job>/<run_id>/tasks/<i>/attempts/<n>/log | progress.json | results/...  the same of a retry (n > 1)
runs/<job>/<run_id>/tasks/<i>/attempt.json how task i's latest attempt ended (agent)
runs/<job>/<run_id>/tasks/<i>/claim.json   which node of a local sweep took task i (written once)
runs/<job>/<run_id>/sweep.json             params, status, exit code and metrics of every task
runs/<job>/<run_id>/summary.csv            the same, one row per task, best first
runs/<job>/<run_id>/result.json            how the sweep ended; written last

Shared by the controller and the agent, so it lives in core.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlbatch.core import runs
from mlbatch.core.errors import AlreadyExists, BadInput
from mlbatch.core.runs import SCHEMA_VERSION, Record

MAX_TASKS = 1000  # task indexes stay at three digits: instance names fit in 63 characters
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclasses.dataclass(frozen=True)
class RecordKeys:
    """Where one attempt's records go: a run's attempt, or a sweep's task.

    What an attempt writes as it goes (its log, its progress, its results) sits beside its
    log, apart from every other attempt's: a retry never appends to or mixes with what a
    preempted attempt left."""

    log: str
    progress: str  # progress.json: the phase the agent is in
    attempt: str  # attempt.json
    results: str  # prefix of what the job wrote
    result: str | None  # result.json, written only when the attempt ends a single run

    @classmethod
    def for_run(cls, run_id: str, attempt: int) -> RecordKeys:
        return cls(
            log=runs.attempt_key(run_id, attempt, runs.ATTEMPT_LOG),
            progress=runs.attempt_key(run_id, attempt, runs.PROGRESS_RECORD),
            attempt=runs.attempt_key(run_id, attempt, runs.ATTEMPT_RECORD),
            results=runs.results_prefix(run_id, attempt),
            result=runs.result_key(run_id),
        )

    @classmethod
    def for_task(cls, run_id: str, task: int, attempt: int = 1) -> RecordKeys:
        return cls(
            log=task_attempt_key(run_id, task, attempt, runs.ATTEMPT_LOG),
            progress=task_attempt_key(run_id, task, attempt, runs.PROGRESS_RECORD),
            attempt=task_key(run_id, task, runs.ATTEMPT_RECORD),
            results=task_attempt_key(run_id, task, attempt, "results"),
            result=None,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskPlan(Record):
    """One task of a sweep as spec.json holds it: its params and the argv they make."""

    params: dict[str, Any]
    argv: tuple[str, ...]

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "argv": tuple(values["argv"])}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepPlan(Record):
    """spec.json's "sweep" key (beside the RunSpec's fields, which any RunSpec reader reads)."""

    parallelism: int
    tasks: tuple[TaskPlan, ...]
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "tasks": tuple(TaskPlan.from_dict(t, "a sweep task") for t in values["tasks"])}


@dataclasses.dataclass(kw_only=True)
class TaskRecord(Record):
    """How one task of a sweep ended, as sweep.json holds it (filled in as the task ends)."""

    index: int
    params: dict[str, Any]
    status: str = runs.CANCELLED
    exit_code: int = -1  # the job's own exit code; -1 when it did not exit by itself
    attempts: int = 0
    message: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # scalars of its results/metrics.json

    def ended(self, status: str, exit_code: int, attempt: int, message: str) -> None:
        self.status, self.exit_code, self.message = status, exit_code, message
        self.attempts = max(self.attempts, attempt)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepRecord(Record):
    """sweep.json: every task's params, status, exit code and metrics; the ranking by the catalog's metric."""

    run_id: str
    job: str
    version: str
    metric: str  # "" when the job names none
    metric_goal: str
    tasks: tuple[TaskRecord, ...]
    ranking: tuple[int, ...]  # task indexes, best first
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def _decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        tasks = tuple(TaskRecord.from_dict(t, "a sweep task") for t in values["tasks"])
        return {**values, "tasks": tasks, "ranking": tuple(values["ranking"])}


def task_key(run_id: str, task: int, name: str) -> str:
    return f"{runs.run_prefix(run_id)}/tasks/{task}/{name}"


def task_attempt_key(run_id: str, task: int, attempt: int, name: str) -> str:
    """An object of one attempt of a task: the first's under tasks/<i>/, a retry's under tasks/<i>/attempts/<n>/."""
    return task_key(run_id, task, name if attempt == 1 else f"attempts/{attempt}/{name}")


def task_log_keys(bucket, run_id: str) -> list[str]:
    """The keys of a sweep's task logs, by task then attempt (none for a single run)."""
    prefix = f"{runs.run_prefix(run_id)}/tasks/"

    def place(key: str) -> tuple[int, int] | None:
        parts = key.removeprefix(prefix).split("/")  # <i>/log or <i>/attempts/<n>/log; not a results file
        if parts[-1] != runs.ATTEMPT_LOG or not parts[0].isdigit():
            return None
        if len(parts) == 2:
            return int(parts[0]), 1
        if len(parts) == 4 and parts[1] == "attempts" and parts[2].isdigit():
            return int(parts[0]), int(parts[2])
        return None

    found = [(where, key) for key in bucket.list(prefix) if (where := place(key)) is not None]
    return [key for _, key in sorted(found)]


def read_plan(bucket, run_id: str) -> SweepPlan | None:
    """The sweep's plan beside the RunSpec in spec.json; None for a single run (or no spec)."""
    data = runs.read_json(bucket, runs.spec_key(run_id))
    if not isinstance(data, dict) or "sweep" not in data:
        return None
    return SweepPlan.from_dict(data["sweep"], bucket.url(runs.spec_key(run_id)) + " (sweep)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskClaim(Record):
    """tasks/<i>/claim.json: the node of a local sweep that took task i's first attempt."""

    run_id: str
    task: int
    node: str
    claimed: str  # when, ISO 8601
    schema_version: int = SCHEMA_VERSION


def claim_key(run_id: str, task: int) -> str:
    return task_key(run_id, task, "claim.json")


def claim_next(bucket, run_id: str, tasks: int, node: str, start: int = 0) -> int | None:
    """The first of the sweep's `tasks` from `start` on that no node has taken, now taken by
    `node`; None when every one is. The claim is written once (the bucket's precondition picks
    one node of any that race for a task), and a node starts after its last one, so the taken
    tasks are always 0..k-1: the controller reads them in that order (run/sweep_local.py)."""
    for task in range(start, tasks):
        claim = TaskClaim(run_id=run_id, task=task, node=node, claimed=runs.now_iso())
        try:
            runs.write_record(bucket, claim_key(run_id, task), claim, immutable=True)
        except AlreadyExists:
            continue
        return task
    return None


def sweep_key(run_id: str) -> str:
    return f"{runs.run_prefix(run_id)}/sweep.json"


def summary_key(run_id: str) -> str:
    return f"{runs.run_prefix(run_id)}/summary.csv"


def _split_pair(pair: str, option: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not _PARAM_NAME.match(key):
        raise BadInput(f"invalid {option} {pair!r}: expected name=value with a name like n_estimators")
    return key, value


def parse_sweeps(options: Iterable[str]) -> list[dict[str, str]]:
    """`--sweep a=1,2 --sweep b=x,y` -> the product [{a:1,b:x}, {a:1,b:y}, {a:2,b:x}, {a:2,b:y}]."""
    axes: dict[str, list[str]] = {}
    for option in options:
        key, values = _split_pair(option, "--sweep")
        items = values.split(",")
        if key in axes:
            raise BadInput(f"--sweep {key} given twice: list all its values in one --sweep {key}=a,b,c")
        if not values or any(v == "" for v in items):
            raise BadInput(f"invalid --sweep {option!r}: expected name=value1,value2,... with no empty value")
        if len(set(items)) != len(items):
            raise BadInput(f"invalid --sweep {option!r}: a value is listed twice")
        axes[key] = items
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())] if axes else []


def parse_sweep_file(text: str, name: str = "--sweep-file") -> list[dict[str, str]]:
    """One params set a line, as space-separated name=value pairs; blank lines and # comments are skipped."""
    sets = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        params: dict[str, str] = {}
        for pair in line.split():
            key, value = _split_pair(pair, f"{name} line {number}:")
            if key in params:
                raise BadInput(f"{name} line {number}: {key} given twice")
            params[key] = value
        sets.append(params)
    return sets


def combine(base: Mapping[str, str], grid: list[dict[str, str]], lines: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every task's raw params: the --param values, then each file line crossed with the --sweep grid."""
    grid = grid or [{}]
    lines = lines or [{}]
    tasks = []
    for line in lines:
        for combo in grid:
            clash = (set(line) & set(combo)) | ((set(line) | set(combo)) & set(base))
            if clash:
                raise BadInput(f"param {sorted(clash)[0]!r} is given by more than one of --param, --sweep and --sweep-file")
            tasks.append({**base, **line, **combo})
    if len(tasks) > MAX_TASKS:
        raise BadInput(f"the sweep has {len(tasks)} tasks: at most {MAX_TASKS} in one run")
    return tasks
