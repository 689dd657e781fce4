"""The run commands as a person or a scheduler calls them (`invoke run-batch`, `runs.wait`,
`gc`, the demo): from their parsed options to what they print and the exit code.
`tasks/runs.py` parses the options and calls these; nothing here knows invoke."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from mlbatch.core.bucket import Bucket, open_bucket
from mlbatch.core.errors import BadInput
from mlbatch.core.runs import ResultRecord
from mlbatch.core.settings import Settings
from mlbatch.run.controller import Controller, RunOutcome, RunRequest, summary_rows
from mlbatch.ui import console, echo, emit, say, summary

if TYPE_CHECKING:
    from mlbatch.run.sweep import SweepRequest, TaskRunner


def controller(settings: Settings) -> Controller:
    from mlbatch.providers import get_provider

    return Controller(open_bucket(settings.bucket), get_provider(settings), say, echo)


def run_attached(settings: Settings, request: RunRequest) -> RunOutcome:
    """Run (or follow, by idempotency key) a batch to its end; print its summary."""
    outcome = controller(settings).run(request)
    console.print(summary(f"run-batch {request.job} {request.version}", summary_rows(outcome)))
    return outcome


def run_sweep(settings: Settings, request: SweepRequest) -> RunOutcome:
    """A sweep where the profile runs its tasks (local instances, or one Cloud Batch job)."""
    from mlbatch.run.sweep_runners import task_runner

    bucket = open_bucket(settings.bucket)
    runner, _ = task_runner(settings, bucket, say)
    return sweep_and_show(bucket, runner, request)


def sweep_and_show(bucket: Bucket, runner: TaskRunner, request: SweepRequest) -> RunOutcome:
    """A sweep: one run, one task per params set; print the ranked tasks and the summary."""
    from mlbatch.core.manifest import load
    from mlbatch.run.ranking import ranked_table
    from mlbatch.run.sweep import Sweep, sweep_rows

    outcome, tasks = Sweep(bucket, runner, say).run(request)
    if tasks:  # the release the run resolved to: --version may say latest
        console.print(ranked_table(tasks, load(bucket, outcome.record.version).jobs[request.job], outcome.run_id))
    console.print(summary(f"run-batch --sweep {request.job} {request.version}", sweep_rows(outcome)))
    return outcome


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """`invoke run-batch`'s options, parsed (timeout in seconds, parallelism a number)."""

    job: str
    version: str
    params: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    idempotency_key: str = ""
    detach: bool = False
    sweeps: tuple[str, ...] = ()
    sweep_file: str = ""
    parallelism: int | None = None
    allow_cpu: bool = False

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweeps or self.sweep_file)

    def request(self) -> RunRequest | SweepRequest:
        """A run's request, or a sweep's; options that do not go together are refused (100)."""
        if self.is_sweep:
            from mlbatch.run.sweep import SweepRequest  # only a sweep loads the sweep's modules (~10 ms)

            if self.detach:
                raise BadInput("--detach does not apply to sweeps yet: a sweep is followed to its end")
            if self.allow_cpu:
                raise BadInput("--allow-cpu applies to single runs, not to sweeps yet")
            return SweepRequest(
                self.job, self.version, self.sweeps, self.sweep_file, self.params, self.parallelism,
                self.timeout_seconds, self.idempotency_key,
            )  # fmt: skip
        if self.parallelism is not None:
            raise BadInput("--parallelism applies to sweeps: add --sweep name=a,b or --sweep-file FILE")
        return RunRequest(self.job, self.version, self.params, self.timeout_seconds, self.idempotency_key, self.allow_cpu)


def run_batch(settings: Settings, options: RunOptions) -> int:
    """`invoke run-batch`: a run, a detached run (prints its id last) or a sweep; the exit code."""
    request = options.request()
    if not isinstance(request, RunRequest):
        outcome = run_sweep(settings, request)
    elif options.detach:
        from mlbatch.run.detach import start

        print(start(controller(settings), request))
        return 0
    else:
        outcome = run_attached(settings, request)
    notify_end(settings, outcome)
    return outcome.exit_code


def dry_run(settings: Settings, options: RunOptions, fmt: str) -> None:
    """`invoke run-batch --dry-run`: the plan, checked as the run would check it; nothing written or created."""
    from mlbatch.run.plan import plan_run, render_plan

    emit(fmt, plan_run(settings, options.request()), render_plan)


def wait(settings: Settings, run_id: str) -> int:
    """`invoke runs.wait`: follow a (detached) run to its end; its exit code."""
    from mlbatch.run import detach

    outcome = detach.wait(controller(settings), run_id)
    console.print(summary(f"runs.wait {run_id}", summary_rows(outcome)))
    notify_end(settings, outcome)
    return outcome.exit_code


def notify_end(settings: Settings, outcome: RunOutcome) -> None:
    """Tell the profile's webhook or Pub/Sub topic that the run ended (never changes its exit code)."""
    if settings.notify_webhook or settings.notify_topic:
        from mlbatch.run.notify import notify

        notify(settings, open_bucket(settings.bucket), outcome, say)


def cancel(settings: Settings, run_id: str) -> ResultRecord:
    """`invoke runs.cancel`: a run's instances deleted, or a sweep's tasks stopped where its profile runs them."""
    from mlbatch.run import detach
    from mlbatch.run.sweep_runners import task_runner

    run = controller(settings)
    return detach.cancel(run, run_id, tasks=lambda: task_runner(settings, run.bucket, say)[0])


def collect_garbage(settings: Settings, dry_run: bool) -> list[tuple[str, str]]:
    """`invoke gc`: instances, and on gcp the Batch jobs of sweeps, that are ours and expired or orphaned."""
    from mlbatch.providers import get_provider
    from mlbatch.run.records import collect_garbage as collect_instances

    removed = collect_instances(get_provider(settings), dry_run)
    if not settings.is_local:  # sweeps run as Cloud Batch jobs on gcp
        from mlbatch.providers.batch import BatchJobs
        from mlbatch.run.sweep_batch import collect_batch_garbage

        removed += collect_batch_garbage(BatchJobs(settings), dry_run)
    return removed
