"""`invoke bench.*`: what run-batch, sweeps, the control plane and the log sink cost, side by side with a baseline."""

import subprocess
import sys

from invoke import Collection

from mlbatch.core.options import Positive
from tasks.common import PROFILE_HELP, ROOT, errors, exit_with, settings, task


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
def run(c, version=None, job="sleep", param=None, repeat: Positive = 5, profile=None):
    """Ratio of run-batch to a plain `docker run` of the same job, side by side."""
    from mlbatch.bench import bench_run as measure
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.manifest import newest_version
    from mlbatch.core.names import check_job_name
    from mlbatch.core.versions import parse_version
    from mlbatch.providers import get_provider
    from mlbatch.ui import console, say, summary

    with errors():
        check_job_name(job)
        if version:
            parse_version(version)
        s = settings(c, profile)
        bucket = open_bucket(s.bucket)
        params = tuple(param or (("seconds=1",) if job == "sleep" else ()))
        rows = measure(bucket, get_provider(s), version or newest_version(bucket), job, params, repeat, say)
    console.print(summary("bench.run: run-batch against docker run", rows))


@task(
    name="control-plane",
    help={
        "minutes": "length of each run's job (default 10)",
        "runs": "concurrent runs measured side by side with one run alone (default 20)",
    },
)
def control_plane(c, minutes: float = 10.0, runs: Positive = 20):
    """Compute API calls per run-minute and bucket bytes per log byte, against the fake Compute API."""
    _test_bench("control_plane", minutes=minutes, runs=runs)


def _test_bench(module: str, **options) -> None:
    """A benchmark of tests/bench (it drives the fakes: test support, not part of the package)."""
    argv = [sys.executable, "-m", f"tests.bench.{module}", *(a for k, v in options.items() for a in (f"--{k}", str(v)))]
    exit_with(subprocess.run(argv, cwd=ROOT, check=False).returncode)


@task(
    name="launch-gcp",
    help={
        "rounds": "runs measured one after another (default 3; each waits out the cloud's ~45 s)",
        "scale": "multiply the cloud's figures (default 1: as users report them; 0.1 for a quick look)",
    },
)
def launch_gcp(c, rounds: Positive = 3, scale: float = 1.0):
    """A run on the gcp code path against the fake Compute API as slow as the real one: the controller apart from the cloud."""
    _test_bench("launch_gcp", rounds=rounds, scale=scale)


@task(
    name="logs",
    help={
        "mb": "MB of awkward output (\\r bars, 1 MB lines, non-UTF-8) to push through (default 200)",
        "bucket": "bucket to append to (default: a file:// bucket in a temp folder)",
        "repeat": "rounds as fast as possible; the best of each is kept (default 3)",
        "seconds": "then one round with the output spread over this many seconds, as a job writes it (default 20)",
    },
)
def logs(c, mb: Positive = 200, bucket=None, repeat: Positive = 3, seconds: float = 20):
    """Bytes/s of the agent's log sink against writing the same bytes to a plain file, side by side."""
    from mlbatch.bench_logs import bench_logs as measure
    from mlbatch.ui import console, say, summary

    with errors():
        rows = measure(bucket, mb, repeat, seconds, say)
    console.print(summary("bench.logs: the bucket log against a plain file", rows))


@task(
    name="sweep",
    help={
        "version": "release to measure; default: the newest release in the bucket",
        "tasks": "params sets: N separate run-batch calls against one sweep of N tasks (default 16)",
        "parallelism": "the sweep's parallelism (default 4)",
        "profile": PROFILE_HELP,
    },
)
def sweep(c, version=None, tasks: Positive = 16, parallelism: Positive = 4, profile=None):
    """A sweep of N short tasks against N separate run-batch calls: wall time and API calls, side by side."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.manifest import newest_version
    from mlbatch.core.versions import parse_version
    from mlbatch.providers import get_provider
    from mlbatch.run.sweep_bench import bench_sweep as measure
    from mlbatch.run.sweep_runners import task_runner
    from mlbatch.ui import console, say, summary

    with errors():
        s = settings(c, profile)
        bucket = open_bucket(s.bucket)
        version = parse_version(version).tag if version else newest_version(bucket)
        runner, client = task_runner(s, bucket, lambda _: None)
        rows = measure(bucket, get_provider(s), runner, client, version, tasks, parallelism, say)
    console.print(summary("bench.sweep: one sweep against separate run-batch calls", rows))


def _settings_of(root, profile):
    """The settings of another checkout (its invoke.yaml), for bench.launch --against."""
    from invoke import Config

    from mlbatch.core.settings import load_settings

    config = Config(project_location=str(root))
    config.load_project()
    section = dict(config.get("mlbatch", {}))
    if profile:
        section["profile"] = profile
    return load_settings(section, root)


@task(
    name="launch",
    help={
        "version": "release to measure; default: the newest release in the bucket",
        "rounds": "rounds of each row, every side in turn, after a warm-up round (default 5)",
        "at_once": "runs started at once, and tasks of the sweep at that parallelism (default 16)",
        "big_tasks": "tasks of the large sweep (default 200)",
        "big_parallelism": "the large sweep's parallelism (default 4)",
        "big_rounds": "rounds of the large sweep and its bare runs (default 1: minutes each)",
        "against": "another checkout (its .venv and newest release) measured in the same rounds, e.g. main's",
        "profile": PROFILE_HELP,
    },
)
def launch(
    c,
    version=None,
    rounds: Positive = 5,
    at_once: Positive = 16,
    big_tasks: Positive = 200,
    big_parallelism: Positive = 4,
    big_rounds: Positive = 1,
    against=None,
    profile=None,
):
    """Launch overhead: a run, N runs at once and two sweeps of a no-op job against bare `docker run`s, with a breakdown."""
    from pathlib import Path

    from mlbatch.bench_launch import Checkout, Sizes, breakdown_lines, measure, row_lines
    from mlbatch.core.errors import BadInput
    from mlbatch.ui import console, say, summary

    with errors():
        checkouts = [Checkout(ROOT, settings(c, profile), version, sys.executable, "mlbatch")]
        if against:
            other = Path(against).resolve()
            if not (other / ".venv" / "bin" / "python").exists():
                raise BadInput(f"--against {against!r}: expected a checkout with its own .venv (python -m venv .venv)")
            checkouts.append(
                Checkout(other, _settings_of(other, profile), None, str(other / ".venv" / "bin" / "python"), other.name)
            )
        sizes = Sizes(rounds, at_once, big_tasks, big_parallelism, big_rounds)
        heading, rows, breakdowns = measure(checkouts, sizes, say)
    console.print(summary(heading, row_lines(rows)))
    console.print(summary("where one run's time goes (median)", breakdown_lines(breakdowns)))


ns = Collection("bench", run, control_plane, launch_gcp, logs, sweep, launch)
