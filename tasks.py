"""invoke wiring only: each task parses its options and calls the mlbatch package.

invoke --list            all tasks;  invoke --help TASK  its options
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
PROFILE_HELP = "settings profile: local (default), gcp, or test (the gcp code path against emulators)"


def _settings(c, profile=None):
    from mlbatch.core.settings import load_settings

    config = dict(c.config.get("mlbatch", {}))
    if profile:
        config["profile"] = profile
    return load_settings(config, ROOT)


@contextlib.contextmanager
def _errors():
    """MlbatchError -> a clear message and its reserved exit code (see README)."""
    from mlbatch.core.errors import MlbatchError

    try:
        yield
    except MlbatchError as exc:
        raise Exit(f"mlbatch: {exc}", code=int(exc.exit_code)) from None


# --- local infrastructure ----------------------------------------------------------


@task(help={"profile": PROFILE_HELP})
def up(c, profile=None):
    """Start what the local profile needs: Docker engine, registry, base image, bucket."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.up(_settings(c, profile), say)


@task(help={"profile": PROFILE_HELP})
def status(c, profile=None):
    """Show the local profile's infrastructure."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        for what, state in infra.status(_settings(c, profile)).items():
            say(f"{what}: {state}")


@task(help={"profile": PROFILE_HELP})
def down(c, profile=None):
    """Stop the registry (and dockerd if local.up started it); remove mlbatch containers."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.down(_settings(c, profile), say)


local = Collection("local", up, status, down)


# --- release -------------------------------------------------------------------------


@task(help={"version": "release version, a git tag like v1.4.0 or v1.4.0-rc.1", "profile": PROFILE_HELP})
def release(c, version, profile=None):
    """Release VERSION: containers, code bundle, VM image, image tests, then the manifest."""
    from mlbatch.release.flow import release as do_release
    from mlbatch.ui import Steps, console

    steps = Steps()
    with _errors():
        try:
            manifest = do_release(_settings(c, profile), version, steps)
        finally:
            if steps.rows:
                console.print(steps.table(f"release {version}"))
        console.print(manifest.to_json(), markup=False)


@task(name="list", default=True, help={"profile": PROFILE_HELP})
def list_releases(c, profile=None):
    """List released versions, oldest first."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        for m in manifest.iter_manifests(open_bucket(_settings(c, profile).bucket)):
            print(f"{m.version}\t{m.created}\t{m.git_sha[:12]}\t{m.vm_image.name}")


@task(help={"version": "the release to print", "profile": PROFILE_HELP})
def show(c, version, profile=None):
    """Print the manifest of VERSION."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        print(manifest.load(open_bucket(_settings(c, profile).bucket), version).to_json(), end="")


releases = Collection("releases", list_releases, show)


# --- baked images (retention) ----------------------------------------------------------


@task(name="list", default=True, help={"profile": PROFILE_HELP})
def list_images(c, profile=None):
    """List the VM images mlbatch baked, with the releases whose manifests name them."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.retention import image_uses
    from mlbatch.release.targets import get_target

    with _errors():
        settings = _settings(c, profile)
        for use in image_uses(get_target(settings), open_bucket(settings.bucket)):
            print(f"{use.image.name}\t{use.image.status}\t{use.image.created}\t{','.join(use.versions) or '-'}")


@task(
    help={
        "keep": "keep the images named by the manifests of the last KEEP releases (at least 1; default 3)",
        "apply": "deprecate and delete; without it, only say what would be done (a dry run)",
        "min_age_hours": "never retire an image younger than this many hours (a release in progress); default 24",
        "profile": PROFILE_HELP,
    }
)
def prune(c, keep=3, apply=False, min_age_hours=24, profile=None):
    """Deprecate, then delete, baked images that no manifest of the last KEEP releases names."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.retention import prune as do_prune
    from mlbatch.release.targets import get_target
    from mlbatch.ui import say

    with _errors():
        settings = _settings(c, profile)
        do_prune(get_target(settings), open_bucket(settings.bucket), keep, min_age_hours, apply, say)


images = Collection("images", list_images, prune)


# --- runs ----------------------------------------------------------------------------


def _run(c, request, profile=None):
    """Run (or attach to) a batch; print the summary; return the outcome."""
    from mlbatch.run.controller import summary_rows
    from mlbatch.ui import console, summary

    outcome = _controller(c, profile).run(request)
    console.print(summary(f"run-batch {request.job} {request.version}", summary_rows(outcome)))
    return outcome


# --- sweeps (run-batch --sweep / --sweep-file) -------------------------------------------


def _run_sweep(c, request, profile=None):
    """A sweep: one run, one task per params set; print the ranked table; return the outcome."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.run.sweep import Sweep, rank, summary_table, sweep_rows
    from mlbatch.run.sweep_runners import task_runner
    from mlbatch.ui import console, say, summary

    settings = _settings(c, profile)
    bucket = open_bucket(settings.bucket)
    runner, _ = task_runner(settings, bucket, say)
    outcome, tasks = Sweep(bucket, runner, say).run(request)
    if tasks:
        from mlbatch.core.manifest import load

        job = load(bucket, request.version).jobs[request.job]
        by = f", best first by {job.metric} ({job.metric_goal})" if job.metric else ""
        console.print(summary_table(rank(tasks, job), f"sweep {outcome.run_id}{by}"))
    console.print(summary(f"run-batch --sweep {request.job} {request.version}", sweep_rows(outcome)))
    return outcome


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
    from mlbatch.run.controller import RunRequest
    from mlbatch.run.sweep import SweepRequest, is_sweep

    if parallelism is not None and not str(parallelism).isdigit():
        raise Exit(f"mlbatch: invalid --parallelism {parallelism!r}: expected a whole number of tasks", code=100)
    if is_sweep(tuple(sweep or ()), sweep_file):
        if detach:
            raise Exit("mlbatch: --detach does not apply to sweeps yet: a sweep is followed to its end", code=100)
        with _errors():
            outcome = _run_sweep(
                c,
                SweepRequest(
                    job=job,
                    version=version,
                    sweeps=tuple(sweep or ()),
                    sweep_file=sweep_file,
                    params=tuple(param or ()),
                    parallelism=int(parallelism) if parallelism is not None else None,
                    timeout_seconds=int(timeout) if timeout is not None else None,
                    idempotency_key=idempotency_key,
                ),
                profile,
            )
        if outcome.exit_code:
            raise Exit(code=outcome.exit_code)
        return
    if parallelism is not None:
        raise Exit("mlbatch: --parallelism applies to sweeps: add --sweep name=a,b or --sweep-file FILE", code=100)
    with _errors():
        request = RunRequest(
            job=job,
            version=version,
            params=tuple(param or ()),
            timeout_seconds=int(timeout) if timeout is not None else None,
            idempotency_key=idempotency_key,
        )
        if detach:
            from mlbatch.run.detach import start

            print(start(_controller(c, profile), request))
            return
        outcome = _run(c, request, profile)
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


def _controller(c, profile=None):
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.run.controller import Controller
    from mlbatch.ui import echo, say

    settings = _settings(c, profile)
    return Controller(open_bucket(settings.bucket), get_provider(settings), say, echo)


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

    with _errors():
        rows = inspect.list_runs(open_bucket(_settings(c, profile).bucket), job, status, since)
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

    with _errors():
        job_of_run_id(run_id)
        settings = _settings(c, profile)
        view = inspect.show(open_bucket(settings.bucket), run_id, load_prices(settings.price_table), settings.region)
    if json:
        print(json_module.dumps(view, indent=2))
    else:
        console.print(inspect_render.render_show(view))


@task(
    name="wait",
    help={"run_id": "the run, e.g. as `run-batch --detach` printed it", "profile": PROFILE_HELP},
)
def runs_wait(c, run_id, profile=None):
    """Follow a (detached) run to its end and exit with its exit code, as an attached run-batch would."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import detach
    from mlbatch.run.controller import summary_rows
    from mlbatch.ui import console, summary

    with _errors():
        job_of_run_id(run_id)
        outcome = detach.wait(_controller(c, profile), run_id)
        console.print(summary(f"runs.wait {run_id}", summary_rows(outcome)))
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


@task(name="cancel", help={"run_id": "the run to end", "profile": PROFILE_HELP})
def runs_cancel(c, run_id, profile=None):
    """End a run: recorded as cancelled, its instance deleted. An ended run is left as it is."""
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run import detach
    from mlbatch.ui import say

    with _errors():
        job_of_run_id(run_id)
        record = detach.cancel(_controller(c, profile), run_id)
        say(f"run {run_id}: {record.status}")


runs = Collection("runs", runs_list, runs_show, runs_wait, runs_cancel)


@task(help={"run_id": "the run, as `invoke runs` lists it", "profile": PROFILE_HELP})
def logs(c, run_id, profile=None):
    """Print a run's log from the bucket (every attempt), after its instance is gone: on a terminal
    with control characters made visible; into a file or pipe as the exact bytes."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run.echo import show_log
    from mlbatch.run.records import read_log_bytes

    with _errors():
        job_of_run_id(run_id)
        show_log(read_log_bytes(open_bucket(_settings(c, profile).bucket), run_id))


@task(help={"dry_run": "only say what would be removed", "profile": PROFILE_HELP})
def gc(c, dry_run=False, profile=None):
    """Remove instances (and Batch jobs of sweeps) that are mlbatch's and expired or orphaned; nothing else."""
    from mlbatch.providers import get_provider
    from mlbatch.run.records import collect_garbage
    from mlbatch.ui import say

    with _errors():
        settings = _settings(c, profile)
        removed = collect_garbage(get_provider(settings), dry_run)
        if not settings.is_local:  # sweeps run as Cloud Batch jobs on gcp
            from mlbatch.providers.batch import BatchJobs
            from mlbatch.run.sweep_batch import collect_batch_garbage

            removed += collect_batch_garbage(BatchJobs(settings), dry_run)
        for name, reason in removed:
            say(f"{'would remove' if dry_run else 'removed'} {name}: {reason}")
        say(f"{len(removed)} instance(s) {'to remove' if dry_run else 'removed'}")


@task(
    auto_shortflags=False,  # -p is --profile elsewhere: no letter here rather than another meaning
    help={
        "port": "serve on 127.0.0.1 at this port (default 8050; 0: any free port)",
        "export": "write the pages into this folder instead of serving them (open DIR/index.html)",
        "limit": "how many of the newest runs the run list shows (default 200)",
        "profile": PROFILE_HELP,
    },
)
def dashboard(c, port=8050, export=None, limit=200, profile=None):
    """A read-only web view of the bucket: runs (status, phases, cost), logs, sweeps with plots, a job across releases."""
    from mlbatch.dashboard import server
    from mlbatch.ui import say

    with _errors():
        site = server.site_for(_settings(c, profile), limit)
        if export:
            server.export(site, Path(export), say)
        else:
            server.serve(site, port, say)


@task(help={"version": "pre-release version to create; default v0.0.0-demo.<UTC timestamp>"})
def demo(c, version=None):
    """The one-command demo: local.up, a release, run-batch train-digits, then the metrics."""
    import datetime as dt

    from mlbatch.core.bucket import open_bucket
    from mlbatch.run.controller import RunRequest
    from mlbatch.run.demo import show_metrics

    version = version or "v0.0.0-demo." + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    up(c)
    release(c, version)
    with _errors():
        outcome = _run(c, RunRequest(job="train-digits", version=version))
        show_metrics(open_bucket(_settings(c).bucket), outcome)
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


# --- scheduler exports ---------------------------------------------------------------


@task(
    name="export",
    help={
        "output_dir": "folder for one <job>.yaml per catalog job (default .mlbatch/rundeck)",
        "project_dir": "absolute path of this checkout on the Rundeck node (default: this checkout)",
        "version": "take the catalog of this release (or latest); default: batch_code/jobs.yaml of the checkout",
        "invoke_path": "the invoke executable on the Rundeck node (default invoke)",
    },
)
def rundeck_export(c, output_dir=None, project_dir=None, version=None, invoke_path="invoke"):
    """Write a Rundeck job definition (YAML) per catalog job, calling run-batch with ${job.execid} as key."""
    from mlbatch.triggers import rundeck
    from mlbatch.triggers.common import load_catalog
    from mlbatch.ui import say

    with _errors():
        settings = _settings(c)
        out = Path(output_dir) if output_dir else settings.state_dir / "rundeck"
        for path in rundeck.export(load_catalog(settings, version), out, Path(project_dir or ROOT), invoke_path):
            say(f"wrote {path}")


rundeck_ns = Collection("rundeck", rundeck_export)


@task(
    name="export",
    iterable=["param"],
    help={
        "job": "catalog job to schedule, e.g. train-digits",
        "cron": "unix-cron schedule in quotes, e.g. '0 3 * * *'",
        "version": "release each trigger runs (default latest: the newest that is not a pre-release, at trigger time)",
        "param": "job parameter as name=value; repeatable (validated against batch_code/jobs.yaml)",
        "time_zone": "tz database name the cron is read in (default Etc/UTC)",
        "profile": "settings profile whose project, region and service account the commands use (default gcp)",
    },
)
def schedule_export(c, job, cron, version="latest", param=None, time_zone="Etc/UTC", profile="gcp"):
    """Print the gcloud commands for Cloud Scheduler -> Pub/Sub -> the mlbatch Cloud Function."""
    from mlbatch.core.catalog import parse_params
    from mlbatch.triggers import schedule
    from mlbatch.triggers.common import load_catalog, pick_job

    with _errors():
        settings = _settings(c, profile)
        chosen = pick_job(load_catalog(settings), job)
        commands = schedule.gcloud_commands(settings, chosen, cron, version, parse_params(param or ()), time_zone)
        print(schedule.script(commands), end="")


schedule_ns = Collection("schedule", schedule_export)


# --- benchmarks ----------------------------------------------------------------------


@task(
    name="run",
    iterable=["param"],
    help={
        "version": "release to measure; default: the newest release in the bucket",
        "job": "job to run (default sleep, whose run time is known)",
        "param": "job parameter as name=value; repeatable (default seconds=1 for sleep)",
        "repeat": "rounds of baseline and run-batch, alternated (default 5)",
        "profile": PROFILE_HELP,
    },
)
def bench_run(c, version=None, job="sleep", param=None, repeat=5, profile=None):
    """Ratio of run-batch to a plain `docker run` of the same job, side by side."""
    from mlbatch.bench import bench_run as measure
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.ui import console, say, summary

    with _errors():
        settings = _settings(c, profile)
        bucket = open_bucket(settings.bucket)
        version = version or (manifest.list_versions(bucket) or [None])[-1]
        if version is None:
            raise Exit("mlbatch: no release in the bucket: run `invoke release --version vX.Y.Z` first", code=101)
        params = tuple(param or (("seconds=1",) if job == "sleep" else ()))
        rows = measure(bucket, get_provider(settings), version, job, params, int(repeat), say)
    console.print(summary("bench.run: run-batch against docker run", rows))


@task(
    name="control-plane",
    help={
        "minutes": "length of each run's job (default 10)",
        "runs": "concurrent runs measured side by side with one run alone (default 20)",
    },
)
def bench_control_plane(c, minutes=10.0, runs=20):
    """Compute API calls per run-minute and bucket bytes per log byte, against the fake Compute API."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "tests.bench.control_plane", "--minutes", str(float(minutes)), "--runs", str(int(runs))]
    code = subprocess.run(argv, cwd=Path(__file__).parent, check=False).returncode  # test support: not part of the package
    if code:
        raise Exit(code=code)


@task(
    name="logs",
    help={
        "mb": "MB of awkward output (\\r bars, 1 MB lines, non-UTF-8) to push through (default 200)",
        "bucket": "bucket to append to (default: a file:// bucket in a temp folder)",
        "repeat": "rounds as fast as possible; the best of each is kept (default 3)",
        "seconds": "then one round with the output spread over this many seconds, as a job writes it (default 20)",
    },
)
def bench_logs(c, mb=200, bucket=None, repeat=3, seconds=20):
    """Bytes/s of the agent's log sink against writing the same bytes to a plain file, side by side."""
    from mlbatch.bench_logs import bench_logs as measure
    from mlbatch.ui import console, say, summary

    with _errors():
        rows = measure(bucket, int(mb), int(repeat), float(seconds), say)
    console.print(summary("bench.logs: the bucket log against a plain file", rows))


@task(
    name="sweep",
    help={
        "version": "release to measure; default: the newest release in the bucket",
        "tasks": "params sets: N separate run-batch calls against one sweep of N tasks (default 16)",
        "parallelism": "the sweep's parallelism (default 4)",
        "profile": "settings profile: local (default), gcp, or test",
    },
)
def bench_sweep(c, version=None, tasks=16, parallelism=4, profile=None):
    """A sweep of N short tasks against N separate run-batch calls: wall time and API calls, side by side."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.run.sweep_bench import bench_sweep as measure
    from mlbatch.run.sweep_runners import task_runner
    from mlbatch.ui import console, say, summary

    with _errors():
        settings = _settings(c, profile)
        bucket = open_bucket(settings.bucket)
        version = version or (manifest.list_versions(bucket) or [None])[-1]
        if version is None:
            raise Exit("mlbatch: no release in the bucket: run `invoke release --version vX.Y.Z` first", code=101)
        runner, client = task_runner(settings, bucket, lambda _: None)
        rows = measure(bucket, get_provider(settings), runner, client, version, int(tasks), int(parallelism), say)
    console.print(summary("bench.sweep: one sweep against separate run-batch calls", rows))


bench = Collection("bench", bench_run, bench_control_plane, bench_logs, bench_sweep)


# --- checks --------------------------------------------------------------------------


@task
def lint(c):
    """ruff (check and format), mypy, yamllint, ansible-lint and packer validate: the static checks CI runs."""
    c.run("ruff check mlbatch tests tasks.py", echo=True)
    c.run("ruff format --check mlbatch tests tasks.py", echo=True)
    c.run("mypy mlbatch tasks.py", echo=True)
    c.run("yamllint -s ansible batch_code invoke.yaml .drone.yml", echo=True)
    with c.cd("ansible"):
        c.run("ansible-lint --offline -q playbook.yml", echo=True)
    c.run("packer validate packer/mlbatch.pkr.hcl", echo=True)


@task
def test(c):
    """pytest: unit, integration and end to end; arguments after `--` go to pytest (invoke test -- -m "not slow")."""
    import shlex
    import subprocess
    import sys

    # invoke joins what follows `--` with spaces; scripts/test quotes each argument so this restores them.
    argv = [sys.executable, "-m", "pytest", *shlex.split(c.remainder)]
    print(" ".join(shlex.quote(a) for a in argv[2:]), flush=True)
    code = subprocess.run(argv, cwd=ROOT).returncode
    if code:
        raise Exit(code=code)


@task
def check(c):
    """What CI runs after local.up: lint, then the tests (arguments after `--` go to pytest)."""
    lint(c)
    test(c)


ns = Collection(
    release, run_batch, runs, logs, gc, demo, lint, test, check, local, releases, images, bench, rundeck_ns, schedule_ns
)
ns.add_task(dashboard)
