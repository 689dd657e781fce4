"""`invoke run-batch`, `logs`, `gc` and `invoke runs[.show|.wait|.cancel|.download|.cost]`: start runs,
follow them, read them back."""

from invoke import Collection

from mlbatch.core.options import Format, Seconds
from tasks.common import FORMAT_HELP, PROFILE_HELP, errors, exit_with, settings, task

JSON_HELP = "the same as --format json"


def _format(fmt: str, json: bool) -> str:
    return "json" if json else fmt


@task(
    iterable=["param", "sweep"],
    help={
        "job": "job name from the release's batch_code/jobs.yaml, e.g. train-digits",
        "version": "released version to run, e.g. v1.4.0 (see `invoke releases`), or latest (newest not a pre-release)",
        "param": "job parameter as name=value; repeat for several (validated against the catalog)",
        "timeout": "how long the job may run, overriding the catalog's timeout_seconds: 90, 90s, 10m, 2h or 1d",
        "idempotency_key": "a trigger's id (schedule slot, Rundeck execution id): the same key never starts two runs",
        "profile": PROFILE_HELP,
        "detach": "print the run id once the instance exists and exit 0; `invoke runs.wait RUN` follows it",
        "sweep": "sweep a param: name=a,b,c; repeat for a grid (one task per combination, one run id)",
        "sweep_file": "a file with one params set a line (name=value name=value), e.g. dates of a backfill",
        "parallelism": "sweeps: at most this many tasks at once, a whole number (default 4)",
        "dry_run": "print the plan (release, params, argv, the instance or Batch job body) and start nothing",
        "format": "with --dry-run: " + FORMAT_HELP,
        "allow_cpu": "a GPU job on an engine without GPUs (local profile) runs on the CPU instead of being refused",
    },
)
def run_batch(
    c,
    job,
    version,
    param=None,
    timeout: Seconds | None = None,
    idempotency_key="",
    profile=None,
    detach=False,
    sweep=None,
    sweep_file="",
    parallelism: int | None = None,
    dry_run=False,
    format: Format = "table",
    allow_cpu=False,
):
    """Run JOB of release VERSION (or latest) on a throw-away instance (or a sweep of it); exit with the job's exit code."""
    from mlbatch.run import commands

    with errors():
        options = commands.RunOptions(
            job, version, tuple(param or ()), timeout, idempotency_key, detach, tuple(sweep or ()), sweep_file, parallelism,
            allow_cpu,
        )  # fmt: skip
        if dry_run:
            commands.dry_run(settings(c, profile), options, format)
            return
        code = commands.run_batch(settings(c, profile), options)
    exit_with(code)


@task(
    name="list",
    default=True,
    help={
        "job": "only runs of this job",
        "status": "only runs with this status: running, succeeded, failed, timeout, cancelled, preempted, skipped, ...",
        "since": "only runs created since: 30m, 24h, 7d, or a date/time like 2026-11-24T03:00 (UTC)",
        "format": FORMAT_HELP,
        "json": JSON_HELP,
        "profile": PROFILE_HELP,
    },
)
def runs_list(c, job=None, status=None, since=None, format: Format = "table", json=False, profile=None):
    """List runs from the bucket's records, oldest first, with their metrics."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import check_job_name
    from mlbatch.run import inspect, inspect_render
    from mlbatch.ui import emit

    with errors():
        if job:
            check_job_name(job)
        rows = inspect.list_runs(open_bucket(settings(c, profile).bucket), job, status, since)
    emit(_format(format, json), rows, inspect_render.render_list)


@task(
    name="show",
    help={
        "run_id": "the run, as `invoke runs` lists it",
        "format": FORMAT_HELP,
        "json": JSON_HELP,
        "profile": PROFILE_HELP,
    },
)
def runs_show(c, run_id, format: Format = "table", json=False, profile=None):
    """A run's spec, params, attempts (zone, Spot or on-demand, phases), provenance, metrics and estimated cost;
    a sweep's tasks (params, status, metric, results), its best task and its cost."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import inspect, inspect_render
    from mlbatch.run.prices import load_prices
    from mlbatch.ui import emit

    with errors():
        job_of_run_id(run_id)
        s = settings(c, profile)
        view = inspect.show(open_bucket(s.bucket), run_id, load_prices(s.price_table), s.region)
    emit(_format(format, json), view, inspect_render.render_show)


@task(name="wait", help={"run_id": "the run, e.g. as `run-batch --detach` printed it", "profile": PROFILE_HELP})
def runs_wait(c, run_id, profile=None):
    """Follow a (detached) run to its end and exit with its exit code, as an attached run-batch would."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import commands

    with errors():
        job_of_run_id(run_id)
        code = commands.wait(settings(c, profile), run_id)
    exit_with(code)


@task(name="cancel", help={"run_id": "the run to end", "profile": PROFILE_HELP})
def runs_cancel(c, run_id, profile=None):
    """End a run: recorded as cancelled, its instance deleted (a sweep: its tasks stopped). An ended run is left as it is."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import commands
    from mlbatch.ui import say

    with errors():
        job_of_run_id(run_id)
        record = commands.cancel(settings(c, profile), run_id)
        say(f"run {run_id}: {record.status}")


@task(
    name="download",
    help={
        "run_id": "the run (or sweep), as `invoke runs` lists it",
        "to": "folder to write into (default ./RUN_ID); files keep their paths under the run's results",
        "profile": PROFILE_HELP,
    },
)
def runs_download(c, run_id, to=None, profile=None):
    """Copy a run's results (a sweep's: every task's, under tasks/<i>/) from the bucket into a folder."""
    from pathlib import Path

    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run.download import download
    from mlbatch.ui import say

    with errors():
        job_of_run_id(run_id)
        folder = Path(to or run_id)
        files = download(open_bucket(settings(c, profile).bucket), run_id, folder, say)
    say(f"{len(files)} file(s) of run {run_id} in {folder}")


@task(
    name="cost",
    help={
        "since": "runs created since: 30m, 24h, 7d (default), or a date/time like 2026-11-24T03:00 (UTC)",
        "job": "only runs of this job",
        "format": FORMAT_HELP,
        "profile": PROFILE_HELP,
    },
)
def runs_cost(c, since="7d", job=None, format: Format = "table", profile=None):
    """Estimated cost of runs and sweeps: per job, machine type, and Spot against on-demand (list prices)."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.run import costs
    from mlbatch.run.prices import load_prices
    from mlbatch.ui import emit

    with errors():
        s = settings(c, profile)
        report = costs.cost_report(open_bucket(s.bucket), load_prices(s.price_table), since, job, s.region)
    emit(format, report, costs.render_report)


@task(
    help={
        "run_id": "the run, as `invoke runs` lists it",
        "follow": "keep printing the log as it grows until the run ends; Ctrl-C stops following, the run goes on",
        "profile": PROFILE_HELP,
    }
)
def logs(c, run_id, follow=False, profile=None):
    """Print a run's log from the bucket, every attempt and task; --follow: as it grows, until the run ends.

    On a terminal with control characters made visible; into a file or pipe as the exact bytes."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run.echo import show_log
    from mlbatch.run.follow import follow_log
    from mlbatch.run.records import read_log_bytes

    with errors():
        job_of_run_id(run_id)
        bucket = open_bucket(settings(c, profile).bucket)
        if follow:
            follow_log(bucket, run_id)
        else:
            show_log(read_log_bytes(bucket, run_id))


@task(help={"dry_run": "only say what would be removed", "profile": PROFILE_HELP})
def gc(c, dry_run=False, profile=None):
    """Remove instances (and Batch jobs of sweeps) that are mlbatch's and expired or orphaned; nothing else."""
    from mlbatch.run import commands
    from mlbatch.ui import say

    with errors():
        removed = commands.collect_garbage(settings(c, profile), dry_run)
    for name, reason in removed:
        say(f"{'would remove' if dry_run else 'removed'} {name}: {reason}")
    say(f"{len(removed)} instance(s) {'to remove' if dry_run else 'removed'}")


ns = Collection("runs", runs_list, runs_show, runs_wait, runs_cancel, runs_download, runs_cost)
