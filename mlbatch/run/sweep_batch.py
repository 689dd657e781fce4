"""A sweep on Google Cloud: one Cloud Batch job, watched until it ends.

create the job -> every 2 s read it (one jobs.get): task counts as progress, quota errors
in its status events -> SUCCEEDED or FAILED: each task's outcome from its records in the
bucket (and, for tasks that left none, from Batch's task list). Cancelled, stopped or
gone wrong before the end: the job is deleted (Batch stops its VMs) and the sweep waits
until it is gone, so nothing is left running. The job's labels and each task's maximum
run duration come from the launch path a single run takes (mlbatch/run/launch.py,
mlbatch/run/deadlines.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlbatch.core import runs
from mlbatch.core.bucket import Bucket
from mlbatch.core.cancel import Cancelled
from mlbatch.core.names import is_managed
from mlbatch.core.sweeps import TaskRecord
from mlbatch.providers.batch import BATCH_EXIT_CODES, QUOTA_CODES, TERMINAL, BatchJobs, JobView, TaskView, job_id
from mlbatch.run import launch as launching
from mlbatch.run.deadlines import SELF_DELETE_SLACK, Margins
from mlbatch.run.sweep import PreparedSweep, SweepStopped, read_task_attempt
from mlbatch.ui import Say

if TYPE_CHECKING:
    from google.cloud import batch_v1

DELETE_WAIT = 120.0  # seconds to wait for a deleted job to be gone
# What the sweep's identity needs on the project (roles/batch.jobsEditor holds them): Batch's
# service agent, not the caller, creates the VMs (https://cloud.google.com/iam/docs/roles-permissions/batch).
BATCH_PERMISSIONS = ("batch.jobs.create", "batch.jobs.get", "batch.jobs.delete", "batch.tasks.list")
BATCH_ROLE = "roles/batch.jobsEditor"


def _progress(view: JobView) -> str:
    order = ("PENDING", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED")
    counts = ", ".join(f"{view.counts[s]} {s.lower()}" for s in order if view.counts.get(s))
    return f"Batch job {view.state.lower()}" + (f": tasks {counts}" if counts else "")


def job_body(jobs: BatchJobs, spec: runs.RunSpec, sweep: PreparedSweep, margins: Margins) -> batch_v1.Job:
    """The sweep's Batch job (run-batch --sweep, and its --dry-run): labelled by the launch path
    (`role=sweep`, expiring after the sweep's span), each task an attempt's span at most."""
    labels = launching.labels(spec, launching.ROLE_SWEEP, time.time() + sweep.seconds(margins) + SELF_DELETE_SLACK)
    max_run = int(margins.attempt_seconds(spec.timeout_seconds))
    return jobs.job_body(spec, sweep.prepared.job, sweep.tasks, sweep.parallelism, labels, max_run)


class BatchTasks:
    name = "Cloud Batch"
    poll = 2.0  # seconds between jobs.get calls
    margins = Margins()

    def __init__(self, bucket: Bucket, jobs: BatchJobs, say: Say, preflight: Callable[[], None]):
        self.bucket, self.jobs, self.say = bucket, jobs, say
        self.preflight = preflight  # Batch's permissions, and the single run's network and runner account

    def stop(self, run_id: str) -> None:
        """Delete the sweep's Batch job (runs.cancel): Batch stops its VMs."""
        self._delete(job_id(run_id))

    def execute(self, spec: runs.RunSpec, sweep: PreparedSweep, outcomes: list[TaskRecord], started: Callable[[], None]) -> None:
        name = job_id(spec.run_id)
        wait = sweep.seconds(self.margins)
        body = job_body(self.jobs, spec, sweep, self.margins)
        self.jobs.create(name, body)
        started()
        self.say(f"Batch job {name} created: {len(sweep.tasks)} tasks, at most {sweep.parallelism} at once")
        deadline = time.monotonic() + wait
        ended, shown = False, ""
        default = (runs.CANCELLED, "the sweep was cancelled before this task ended")
        try:
            while True:
                view = self.jobs.get(name)
                if view is None and runs.read_result(self.bucket, spec.run_id) is not None:
                    raise Cancelled("runs.cancel")  # it recorded the end, then deleted the job
                if view is None:
                    default = (runs.INFRA_FAILED, "the Batch job was deleted before this task ended")
                    raise SweepStopped(f"Batch job {name} was deleted while the sweep ran", runs.INFRA_FAILED)
                if _progress(view) != shown:
                    shown = _progress(view)
                    self.say(shown)
                if view.state in TERMINAL:
                    ended = True
                    break
                quota = next((e for e in view.events if any(code in e for code in QUOTA_CODES)), None)
                if quota and not any(view.counts.get(s) for s in ("RUNNING", "SUCCEEDED", "FAILED")):
                    default = (runs.QUOTA_EXCEEDED, "not run: quota exceeded")
                    raise SweepStopped(f"quota exceeded, the Batch job cannot start VMs: {quota}", runs.QUOTA_EXCEEDED)
                if time.monotonic() > deadline:
                    default = (runs.TIMEOUT, "the sweep outlived its deadline")
                    raise SweepStopped(f"Batch job {name} has not ended after {wait}s; deleted", runs.TIMEOUT)
                time.sleep(self.poll)
        finally:
            if not ended:
                self._delete(name)
            tasks = self.jobs.tasks(name) if ended else []
            self._collect(spec, outcomes, tasks, default)

    def _collect(self, spec: runs.RunSpec, outcomes: list[TaskRecord], tasks: list[TaskView], default: tuple[str, str]) -> None:
        """Each task's outcome: its agent's record when final, else what Batch says, else `default`."""
        views = {t.index: t for t in tasks}
        for outcome in outcomes:
            record = read_task_attempt(self.bucket, spec.run_id, outcome.index)
            view = views.get(outcome.index)
            failed = view is not None and view.state == "FAILED"
            if record is not None and (record.status != runs.PREEMPTED or failed):
                # a preempted record is final once Batch gave up on the task
                outcome.ended(record.status, record.exit_code, record.attempt, record.message)
            elif failed and view is not None:
                exit_code = view.exit_code if view.exit_code is not None else runs.NO_EXIT_CODE
                message = view.message or "Batch failed the task before its agent recorded it"
                if exit_code in BATCH_EXIT_CODES:
                    message = f"{message} ({BATCH_EXIT_CODES[exit_code]})"
                outcome.ended(runs.INFRA_FAILED, exit_code, 1, message)
            else:
                outcome.ended(default[0], runs.NO_EXIT_CODE, record.attempt if record else 0, default[1])

    def _delete(self, name: str) -> None:
        try:
            self.jobs.delete(name, "mlbatch: the sweep was cancelled or stopped")
            deadline = time.monotonic() + DELETE_WAIT
            while self.jobs.get(name) is not None and time.monotonic() < deadline:
                time.sleep(1.0)
        except Exception as exc:  # the tasks' max run duration still ends them; `invoke gc` removes the job
            self.say(f"could not delete Batch job {name}: {exc}")


def collect_batch_garbage(jobs: BatchJobs, dry_run: bool, now: float | None = None) -> list[tuple[str, str]]:
    """Delete Batch jobs that are ours and expired (a controller that died leaves its job to this)."""
    now = time.time() if now is None else now
    removed = []
    for view in jobs.list_ours():
        expiry = view.labels.get("expiry", "")
        if not is_managed(view.labels) or not (expiry.isdigit() and int(expiry) < now):
            continue
        if not dry_run:
            jobs.delete(view.name, "mlbatch gc: expired")
        removed.append((f"Batch job {view.name}", f"expired ({view.state.lower()})"))
    return removed
