"""`invoke run-batch --sweep ...`: one run id, one task per params set.

validate every task's params against the catalog (no side effect before) -> the launch
path a single run takes (mlbatch/run/launch.py: the task runner's preflight, idempotency
claim, spec.json with the run's spec plus each task's params and argv, the job's overlap
slot) -> the tasks run where the profile says (sweep_local: local instances, at most P at
once; sweep_batch: one Cloud Batch job) -> sweep.json, summary.csv, result.json last ->
exit code: 0 when every task succeeded, TASKS_FAILED (112) when some did not, the reserved
code of what stopped the sweep otherwise (cancelled, quota, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled, cancel_on_signals
from mlbatch.core.catalog import Job, parse_params
from mlbatch.core.errors import AlreadyExists, BadInput, MlbatchError, NotStarted
from mlbatch.core.sweeps import TaskRecord
from mlbatch.run import launch as launching
from mlbatch.run import metrics
from mlbatch.run.claims import Existing
from mlbatch.run.deadlines import Margins
from mlbatch.run.launch import Prepared, RunOutcome, RunRequest, prepare, status_of
from mlbatch.run.ranking import rank, summary_csv
from mlbatch.ui import Say

DEFAULT_PARALLELISM = 4
MAX_PARALLELISM = 1000


@dataclasses.dataclass(frozen=True)
class SweepRequest:
    job: str
    version: str
    sweeps: tuple[str, ...] = ()  # name=a,b,c
    sweep_file: str = ""  # one params set a line
    params: tuple[str, ...] = ()  # shared by every task
    parallelism: int | None = None
    timeout_seconds: int | None = None
    idempotency_key: str = ""

    @property
    def run_request(self) -> RunRequest:
        """The request as the launch path takes it (the tasks' params are the sweep's own)."""
        return RunRequest(self.job, self.version, (), self.timeout_seconds, self.idempotency_key)


@dataclasses.dataclass
class PreparedSweep:
    prepared: Prepared
    tasks: list[dict[str, Any]]  # every task's params, validated, with defaults
    parallelism: int

    def seconds(self, margins: Margins) -> float:
        """The longest its tasks may take: waves of P, each an attempt long, after a wait for capacity."""
        return margins.sweep_seconds(self.prepared.timeout_seconds, len(self.tasks), self.parallelism)


class SweepStopped(Exception):  # noqa: N818 - a stop, not an error of ours: the status says why
    """The sweep as a whole could not go on (quota, the Batch job deleted, ...); tasks keep what they recorded.

    Not an MlbatchError: the runner raises it and Sweep.run records it, with its run status."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


class TaskRunner(Protocol):
    """Runs a sweep's tasks where the profile says; fills `outcomes` as tasks end."""

    name: str
    margins: Margins

    def preflight(self) -> None:
        """Refuse a sweep the profile cannot run (permissions, network), before anything is written."""

    def execute(self, spec: runs.RunSpec, sweep: PreparedSweep, outcomes: list[TaskRecord], started: Callable[[], None]) -> None:
        """Run every task; call `started` once the first task's instance (or the Batch job) exists."""

    def stop(self, run_id: str) -> None:
        """Stop every task of the sweep (runs.cancel from another process)."""


def prepare_sweep(bucket: Bucket, request: SweepRequest) -> PreparedSweep:
    """Every check that can refuse the sweep, each task's params included, before anything is written."""
    grid = sweeps.parse_sweeps(request.sweeps)
    lines: list[dict[str, str]] = []
    if request.sweep_file:
        path = Path(request.sweep_file)
        if not path.is_file():
            raise BadInput(f"--sweep-file {request.sweep_file!r} is not a file: expected one params set a line (a=1 b=x)")
        lines = sweeps.parse_sweep_file(path.read_text(), f"--sweep-file {request.sweep_file}")
        if not lines:
            raise BadInput(f"--sweep-file {request.sweep_file!r} has no params set: expected one a line (a=1 b=x)")
    raw = sweeps.combine(parse_params(request.params), grid, lines)
    if request.parallelism is not None and not 1 <= request.parallelism <= MAX_PARALLELISM:
        raise BadInput(f"invalid --parallelism {request.parallelism}: expected 1 to {MAX_PARALLELISM}")
    prepared = prepare(bucket, request.run_request)
    tasks = []
    for i, params in enumerate(raw):
        try:
            tasks.append(prepared.job.resolve_params(params))
        except BadInput as exc:
            raise BadInput(f"task {i} ({_params_text(params)}): {exc}") from None
    parallelism = min(request.parallelism or DEFAULT_PARALLELISM, len(tasks))
    return PreparedSweep(prepared, tasks, parallelism)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def sweep_plan(sweep: PreparedSweep) -> sweeps.SweepPlan:
    """The sweep's part of spec.json: parallelism, and every task's params and argv."""
    job = sweep.prepared.job
    return sweeps.SweepPlan(
        parallelism=sweep.parallelism,
        tasks=tuple(sweeps.TaskPlan(params=p, argv=tuple(job.argv(p))) for p in sweep.tasks),
    )


class Sweep:
    attach_poll = 1.0  # seconds between reads of a sweep followed through its records

    def __init__(self, bucket: Bucket, runner: TaskRunner, say: Say):
        self.bucket, self.runner, self.say = bucket, runner, say

    def run(self, request: SweepRequest) -> tuple[RunOutcome, list[TaskRecord]]:
        sweep = prepare_sweep(self.bucket, request)
        job = sweep.prepared.job
        margins = self.runner.margins
        begun = launching.begin(
            self.bucket,
            request.run_request,
            sweep.prepared,
            preflight=self.runner.preflight,
            hold_seconds=sweep.seconds(margins),
            say=self.say,
            plan=sweep_plan(sweep),
        )
        if isinstance(begun, Existing):
            outcome = launching.follow(self.bucket, begun.run_id, self.say, margins, self.attach_poll)
            record = runs.read_record(self.bucket, sweeps.sweep_key(outcome.run_id), sweeps.SweepRecord)
            return outcome, list(record.tasks) if record else []
        spec, claim = begun.spec, begun.claim
        self.say(
            f"sweep {spec.run_id}: {len(sweep.tasks)} tasks of job {job.name}, release {spec.version}, "
            f"at most {sweep.parallelism} at once on {self.runner.name}"
        )
        outcomes = [TaskRecord(index=i, params=p) for i, p in enumerate(sweep.tasks)]
        status, message = runs.SUCCEEDED, ""

        def started() -> None:
            if claim is not None:
                claim.settle()  # the key's sweep stands from its first task on (later calls: no-op)

        try:
            with cancel_on_signals():
                try:
                    self.runner.execute(spec, sweep, outcomes, started)
                except Cancelled as exc:
                    status, message = runs.CANCELLED, f"cancelled by {exc}; unfinished tasks were stopped"
                except SweepStopped as exc:
                    status, message = exc.status, str(exc)
                except MlbatchError as exc:
                    if claim is not None and claim.record.state == runs.KEY_STARTING and not launching.ends_the_run(exc):
                        raise NotStarted(
                            f"sweep {spec.run_id} did not start: {exc}; the next trigger with its idempotency key resumes it",
                            exc.exit_code,
                        ) from exc
                    status, message = status_of(exc), str(exc)
                result = self._records(spec, job, outcomes, status, message)
        finally:
            launching.give_back(self.bucket, claim)  # no task started: spent if its end is on record, else released
        return RunOutcome(spec.run_id, result.run_exit_code, result, {}), outcomes

    def _records(self, spec: runs.RunSpec, job: Job, outcomes: list[TaskRecord], status: str, message: str) -> runs.ResultRecord:
        """sweep.json and summary.csv, then result.json last (the first result written wins)."""
        for outcome in outcomes:
            outcome.metrics = read_metrics(self.bucket, spec.run_id, outcome.index, outcome.attempts)
        ranked = rank(outcomes, job)
        succeeded = sum(1 for o in outcomes if o.status == runs.SUCCEEDED)
        if status == runs.SUCCEEDED and succeeded < len(outcomes):
            status = runs.TASKS_FAILED
            message = f"{len(outcomes) - succeeded} of {len(outcomes)} tasks did not succeed"
        record = sweeps.SweepRecord(
            run_id=spec.run_id,
            job=spec.job,
            version=spec.version,
            metric=job.metric,
            metric_goal=job.metric_goal,
            tasks=tuple(outcomes),
            ranking=tuple(o.index for o in ranked),
        )
        runs.write_record(self.bucket, sweeps.sweep_key(spec.run_id), record)
        self.bucket.write(sweeps.summary_key(spec.run_id), summary_csv(ranked).encode())
        result = runs.ResultRecord(
            run_id=spec.run_id,
            job=spec.job,
            version=spec.version,
            attempt=max((o.attempts for o in outcomes), default=0),
            status=status,
            exit_code=runs.NO_EXIT_CODE,
            message=message,
            finished=runs.now_iso(),
            results=self.bucket.url(f"{runs.run_prefix(spec.run_id)}/tasks"),
            recorded_by=runs.CONTROLLER,
            tasks=len(outcomes),
            succeeded=succeeded,
            sweep=self.bucket.url(sweeps.sweep_key(spec.run_id)),
        )
        try:
            runs.write_record(self.bucket, runs.result_key(spec.run_id), result, immutable=True)
        except AlreadyExists:
            return runs.read_result(self.bucket, spec.run_id) or result
        if message:
            self.say(message)
        return result


def read_task_attempt(bucket: Bucket, run_id: str, task: int) -> runs.AttemptRecord | None:
    """The agent's record of the task's latest attempt."""
    return runs.read_record(bucket, sweeps.task_key(run_id, task, runs.ATTEMPT_RECORD), runs.AttemptRecord)


def read_metrics(bucket: Bucket, run_id: str, index: int, attempt: int) -> dict[str, Any]:
    """The scalars of the metrics.json the task's last attempt wrote; nothing when it wrote none (or not JSON)."""
    if attempt < 1:
        return {}
    return metrics.read_metrics(bucket, sweeps.task_attempt_key(run_id, index, attempt, "results"))


def sweep_rows(outcome: RunOutcome) -> list[tuple[str, str]]:
    r = outcome.record
    rows = [
        ("run", outcome.run_id),
        ("status", r.status),
        ("exit code", str(outcome.exit_code)),
        ("tasks", f"{r.succeeded} of {r.tasks} succeeded"),
        ("records", r.sweep or "-"),
        ("summary", r.sweep.removesuffix("sweep.json") + "summary.csv" if r.sweep else "-"),
    ]
    if r.message:
        rows.append(("message", r.message))
    return rows
