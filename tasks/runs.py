"""`invoke run-batch`, `logs`, `gc` and `invoke runs[.show|.wait|.cancel]`: start runs, follow them, read them back."""

from invoke import Collection, task

from tasks.common import PROFILE_HELP, errors, exit_with, settings


@task(
    iterable=["param", "sweep"],
    help={
        "job": "job name from the release's batch_code/jobs.yaml, e.g. train-digits",
        "version": "released version to run, e.g. v1.4.0 (see `invoke releases`), or latest (newest not a pre-release)",
        "param": "job parameter as name=value; repeat for several (validated against the catalog)",
        "timeout": "seconds the job may run, overriding the catalog's timeout_seconds",
        "idempotency_key": "a trigger's id (schedule slot, Rundeck execution id): the same key never starts two runs",
        "profile": PROFILE_HELP,
        "detach": "print the run id once the instance exists and exit 0; `invoke runs.wait RUN` follows it",
        "sweep": "sweep a param: name=a,b,c; repeat for a grid (one task per combination, one run id)",
        "sweep_file": "a file with one params set a line (name=value name=value), e.g. dates of a backfill",
        "parallelism": "sweeps: at most this many tasks at once (default 4)",
    },
)
def run_batch(
    c,
    job,
    version,
    param=None,
    timeout=None,
    idempotency_key="",
    profile=None,
    detach=False,
    sweep=None,
    sweep_file="",
    parallelism=None,
):
    """Run JOB of release VERSION (or latest) on a throw-away instance (or a sweep of it); exit with the job's exit code."""
    from mlbatch.run import commands

    with errors():
        code = commands.run_batch(
            settings(c, profile), job, version, tuple(param or ()), timeout, idempotency_key, detach, tuple(sweep or ()),
            sweep_file, parallelism,
        )  # fmt: skip
    exit_with(code)


@task(
    name="list",
    default=True,
    help={
        "job": "only runs of this job",
        "status": "only runs with this status: running, succeeded, failed, timeout, cancelled, preempted, skipped, ...",
        "since": "only runs created since: 30m, 24h, 7d, or a date/time like 2026-11-24T03:00 (UTC)",
        "json": "one JSON list for machines instead of the table",
        "profile": PROFILE_HELP,
    },
)
def runs_list(c, job=None, status=None, since=None, json=False, profile=None):
    """List runs from the bucket's records, oldest first, with their metrics."""
    import json as json_module

    from mlbatch.core.bucket import open_bucket
    from mlbatch.run import inspect, inspect_render

    with errors():
        rows = inspect.list_runs(open_bucket(settings(c, profile).bucket), job, status, since)
    print(json_module.dumps(rows, indent=2) if json else inspect_render.render_list(rows), end="\n" if json else "")


@task(
    name="show",
    help={
        "run_id": "the run, as `invoke runs` lists it",
        "json": "the same as one JSON object, for machines",
        "profile": PROFILE_HELP,
    },
)
def runs_show(c, run_id, json=False, profile=None):
    """A run's spec, params, attempts (zone, Spot or on-demand, phases), provenance, metrics and estimated cost;
    a sweep's tasks (params, status, metric, results), its best task and its cost."""
    import json as json_module

    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import inspect, inspect_render
    from mlbatch.run.prices import load_prices
    from mlbatch.ui import console

    with errors():
        job_of_run_id(run_id)
        s = settings(c, profile)
        view = inspect.show(open_bucket(s.bucket), run_id, load_prices(s.price_table), s.region)
    if json:
        print(json_module.dumps(view, indent=2))
    else:
        console.print(inspect_render.render_show(view))


@task(name="wait", help={"run_id": "the run, e.g. as `run-batch --detach` printed it", "profile": PROFILE_HELP})
def runs_wait(c, run_id, profile=None):
    """Follow a (detached) run to its end and exit with its exit code, as an attached run-batch would."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import commands, detach
    from mlbatch.run.controller import summary_rows
    from mlbatch.ui import console, summary

    with errors():
        job_of_run_id(run_id)
        outcome = detach.wait(commands.controller(settings(c, profile)), run_id)
        console.print(summary(f"runs.wait {run_id}", summary_rows(outcome)))
    exit_with(outcome.exit_code)


@task(name="cancel", help={"run_id": "the run to end", "profile": PROFILE_HELP})
def runs_cancel(c, run_id, profile=None):
    """End a run: recorded as cancelled, its instance deleted. An ended run is left as it is."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import commands, detach
    from mlbatch.ui import say

    with errors():
        job_of_run_id(run_id)
        record = detach.cancel(commands.controller(settings(c, profile)), run_id)
        say(f"run {run_id}: {record.status}")


@task(help={"run_id": "the run, as `invoke runs` lists it", "profile": PROFILE_HELP})
def logs(c, run_id, profile=None):
    """Print a run's log from the bucket (every attempt), after its instance is gone: on a terminal
    with control characters made visible; into a file or pipe as the exact bytes."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run.echo import show_log
    from mlbatch.run.records import read_log_bytes

    with errors():
        job_of_run_id(run_id)
        show_log(read_log_bytes(open_bucket(settings(c, profile).bucket), run_id))


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


ns = Collection("runs", runs_list, runs_show, runs_wait, runs_cancel)
