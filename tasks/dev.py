"""`invoke demo`, `lint`, `test` (and `test.fast`, `test.live`) and `check`: the one-command demo and what CI runs."""

import os
import shlex
import subprocess
import sys
from typing import cast

from invoke import Collection, Task

from tasks.common import ROOT, errors, exit_with, settings, task
from tasks.local import up
from tasks.releases import release

PYTHON_SOURCES = "mlbatch tests tasks"


@task(help={"version": "pre-release version to create; default v0.0.0-demo.<UTC timestamp>"})
def demo(c, version=None):
    """The one-command demo: local.up, a release, run-batch train-digits, then the metrics."""
    import datetime as dt

    from mlbatch.core.bucket import open_bucket
    from mlbatch.core.versions import parse_version
    from mlbatch.run.commands import run_attached
    from mlbatch.run.controller import RunRequest
    from mlbatch.run.demo import show_metrics

    with errors():
        version = parse_version(version).tag if version else "v0.0.0-demo." + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    up(c)
    release(c, version)
    with errors():
        outcome = run_attached(settings(c), RunRequest(job="train-digits", version=version))
        show_metrics(open_bucket(settings(c).bucket), outcome)
    exit_with(outcome.exit_code)


@task
def lint(c):
    """ruff (check and format), mypy, yamllint, ansible-lint and packer validate: the static checks CI runs."""
    c.run(f"ruff check {PYTHON_SOURCES}", echo=True)
    c.run(f"ruff format --check {PYTHON_SOURCES}", echo=True)
    c.run("mypy mlbatch tasks", echo=True)
    c.run("yamllint -s ansible batch_code invoke.yaml .drone.yml", echo=True)
    with c.cd("ansible"):
        c.run("ansible-lint --offline -q playbook.yml", echo=True)
    c.run("packer validate packer/mlbatch.pkr.hcl", echo=True)


@task
def test(c):
    """pytest: unit, integration and end to end; arguments after `--` go to pytest (invoke test -- -m "not slow")."""
    # invoke joins what follows `--` with spaces; scripts/test quotes each argument so this restores them.
    argv = [sys.executable, "-m", "pytest", *shlex.split(c.remainder)]
    print(" ".join(shlex.quote(a) for a in argv[2:]), flush=True)
    exit_with(subprocess.run(argv, cwd=ROOT).returncode)


# The suites that need no release nor bake, on both cores (pytest-xdist; the tests that use the
# engine share one worker: --dist loadgroup), without the plugins only the chaos suite uses
# (hypothesis, anyio: 1.3 s of start-up in each of the three processes).
FAST_SUITE = ["tests/unit", "tests/jobs", "tests/support/tests"]
FAST_OPTIONS = ["-n", "2", "--dist", "loadgroup", "-p", "no:hypothesispytest", "-p", "no:anyio"]


@task(name="fast")
def test_fast(c):
    """The fast suite (unit, jobs, the fakes' own; about half a minute on 2 cores); arguments after `--` go to pytest."""
    argv = [sys.executable, "-m", "pytest", *FAST_OPTIONS, *FAST_SUITE, *shlex.split(c.remainder)]
    exit_with(subprocess.run(argv, cwd=ROOT).returncode)


@task(name="live")
def test_live(c):
    """The live smoke suite against the gcp profile's real project (costs money; see tests/live/conftest.py)."""
    argv = [sys.executable, "-m", "pytest", "tests/live", "-m", "live", "-s"]
    exit_with(subprocess.run(argv, cwd=ROOT, env={**os.environ, "MLBATCH_LIVE": "1"}).returncode)


@task
def check(c):
    """What CI runs after local.up: lint, then the tests (arguments after `--` go to pytest)."""
    lint(c)
    test(c)


test_ns = Collection("test", test_fast, test_live)
test_ns.add_task(cast(Task, test), default=True)  # `invoke test` as before; `invoke test.live` beside it
