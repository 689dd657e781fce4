"""The run commands as a person or a scheduler calls them (`invoke run-batch`, `runs.wait`,
`gc`, the demo): from their parsed options to what they print and the exit code.
`tasks/runs.py` parses the options and calls these; nothing here knows invoke."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbatch.core.bucket import Bucket, open_bucket
from mlbatch.core.errors import BadInput
from mlbatch.core.settings import Settings
from mlbatch.run.controller import Controller, RunOutcome, RunRequest, summary_rows
from mlbatch.ui import console, echo, say, summary

if TYPE_CHECKING:
    from mlbatch.run.sweep import SweepRequest, TaskRunner


def controller(settings: Settings) -> Controller:
    from mlbatch.providers import get_provider

    return Controller(open_bucket(settings.bucket), get_provider(settings), say, echo)


def whole_number(value: str | int | None, option: str, unit: str) -> int | None:
    """An option given as text (`--timeout 600`): its number, or BadInput naming the option."""
    if value is None:
        return None
    if not str(value).isdigit():
        raise BadInput(f"invalid {option} {value!r}: expected a whole number of {unit}")
    return int(value)


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


def run_batch(
    settings: Settings,
    job: str,
    version: str,
    params: tuple[str, ...] = (),
    timeout: str | None = None,
    idempotency_key: str = "",
    detach: bool = False,
    sweeps: tuple[str, ...] = (),
    sweep_file: str = "",
    parallelism: str | None = None,
) -> int:
    """`invoke run-batch`: a run, a detached run (prints its id last) or a sweep; the exit code."""
    from mlbatch.run.sweep import SweepRequest, is_sweep

    count = whole_number(parallelism, "--parallelism", "tasks")
    timeout_seconds = whole_number(timeout, "--timeout", "seconds")
    if is_sweep(sweeps, sweep_file):
        if detach:
            raise BadInput("--detach does not apply to sweeps yet: a sweep is followed to its end")
        request = SweepRequest(job, version, sweeps, sweep_file, params, count, timeout_seconds, idempotency_key)
        return run_sweep(settings, request).exit_code
    if count is not None:
        raise BadInput("--parallelism applies to sweeps: add --sweep name=a,b or --sweep-file FILE")
    run = RunRequest(job, version, params, timeout_seconds, idempotency_key)
    if detach:
        from mlbatch.run.detach import start

        print(start(controller(settings), run))
        return 0
    return run_attached(settings, run).exit_code


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
