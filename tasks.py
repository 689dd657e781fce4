"""invoke wiring only: each task parses its options and calls the mlbatch package.

invoke --list            all tasks;  invoke --help TASK  its options
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent


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


@task
def up(c):
    """Start what the local profile needs: Docker engine, registry, base image, bucket."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.up(_settings(c), say)


@task
def status(c):
    """Show the local profile's infrastructure."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        for what, state in infra.status(_settings(c)).items():
            say(f"{what}: {state}")


@task
def down(c):
    """Stop the registry (and dockerd if local.up started it); remove mlbatch containers."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.down(_settings(c), say)


local = Collection("local", up, status, down)


# --- release -------------------------------------------------------------------------


@task(help={"version": "release version, a git tag like v1.4.0 or v1.4.0-rc.1"})
def release(c, version):
    """Release VERSION: containers, code bundle, VM image, image tests, then the manifest."""
    from mlbatch.release.flow import release as do_release
    from mlbatch.ui import Steps, console

    steps = Steps()
    with _errors():
        try:
            manifest = do_release(_settings(c), version, steps)
        finally:
            if steps.rows:
                console.print(steps.table(f"release {version}"))
        console.print(manifest.to_json(), markup=False)


@task(name="list", default=True)
def list_releases(c):
    """List released versions, oldest first."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        for m in manifest.iter_manifests(open_bucket(_settings(c).bucket)):
            print(f"{m.version}\t{m.created}\t{m.git_sha[:12]}\t{m.vm_image.name}")


@task(help={"version": "the release to print"})
def show(c, version):
    """Print the manifest of VERSION."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        print(manifest.load(open_bucket(_settings(c).bucket), version).to_json(), end="")


releases = Collection("releases", list_releases, show)


# --- runs ----------------------------------------------------------------------------


def _run(c, request, profile=None):
    """Run (or attach to) a batch; print the summary; return the outcome."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.run.controller import Controller, summary_rows
    from mlbatch.ui import console, echo, say, summary

    settings = _settings(c, profile)
    bucket = open_bucket(settings.bucket)
    controller = Controller(bucket, get_provider(settings), say, echo)
    outcome = controller.run(request)
    console.print(summary(f"run-batch {request.job} {request.version}", summary_rows(outcome)))
    return outcome


@task(
    iterable=["param"],
    help={
        "job": "job name from the release's batch_code/jobs.yaml, e.g. train-digits",
        "version": "released version to run, e.g. v1.4.0 (see `invoke releases`)",
        "param": "job parameter as name=value; repeat for several (validated against the catalog)",
        "timeout": "seconds the job may run, overriding the catalog's timeout_seconds",
        "idempotency_key": "a trigger's id (schedule slot, Rundeck execution id): the same key never starts two runs",
        "profile": "settings profile: local (default), gcp, or test (gcp against emulators)",
    },
)
def run_batch(c, job, version, param=None, timeout=None, idempotency_key="", profile=None):
    """Run JOB of release VERSION on a throw-away instance; exit with the job's exit code."""
    from mlbatch.run.controller import RunRequest

    with _errors():
        request = RunRequest(
            job=job,
            version=version,
            params=tuple(param or ()),
            timeout_seconds=int(timeout) if timeout is not None else None,
            idempotency_key=idempotency_key,
        )
        outcome = _run(c, request, profile)
    if outcome.exit_code:
        raise Exit(code=outcome.exit_code)


@task(help={"job": "only runs of this job"})
def runs(c, job=None):
    """List runs from the bucket's records, oldest first."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.run.records import list_runs

    with _errors():
        for row in list_runs(open_bucket(_settings(c).bucket), job):
            print(f"{row.run_id}\t{row.version}\t{row.status}\t{row.exit_code}\t{row.created}")


@task(help={"run_id": "the run, as `invoke runs` lists it"})
def logs(c, run_id):
    """Print a run's log from the bucket (every attempt), after its instance is gone."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.names import job_of_run_id
    from mlbatch.run.records import read_logs

    with _errors():
        job_of_run_id(run_id)
        print(read_logs(open_bucket(_settings(c).bucket), run_id), end="")


@task(help={"dry_run": "only say what would be removed"})
def gc(c, dry_run=False):
    """Remove instances that are mlbatch's and expired or orphaned; nothing else."""
    from mlbatch.providers import get_provider
    from mlbatch.run.records import collect_garbage
    from mlbatch.ui import say

    with _errors():
        removed = collect_garbage(get_provider(_settings(c)), dry_run)
        for name, reason in removed:
            say(f"{'would remove' if dry_run else 'removed'} {name}: {reason}")
        say(f"{len(removed)} instance(s) {'to remove' if dry_run else 'removed'}")


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


# --- benchmarks ----------------------------------------------------------------------


@task(
    name="run",
    iterable=["param"],
    help={
        "version": "release to measure; default: the newest release in the bucket",
        "job": "job to run (default sleep, whose run time is known)",
        "param": "job parameter as name=value; repeatable (default seconds=1 for sleep)",
        "repeat": "rounds of baseline and run-batch, alternated (default 5)",
    },
)
def bench_run(c, version=None, job="sleep", param=None, repeat=5):
    """Ratio of run-batch to a plain `docker run` of the same job, side by side."""
    from mlbatch.bench import bench_run as measure
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.ui import console, say, summary

    with _errors():
        settings = _settings(c)
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


bench = Collection("bench", bench_run, bench_control_plane, bench_logs)


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


ns = Collection(release, run_batch, runs, logs, gc, demo, lint, test, check, local, releases, bench)
