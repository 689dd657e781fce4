"""The two defects of issue 9, end to end on the local profile: a results symlink must not
carry the instance's files into the bucket, and every byte of a big, awkward job output
must reach the bucket log, tail included. And issue 16's memory limit: a job that takes more
than its container may is killed, and the agent lives to record why."""

from __future__ import annotations

import importlib.util

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.local.infra import docker_client
from mlbatch.providers.local import LocalProvider
from mlbatch.release.flow import release
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.ui import Steps
from tests.conftest import ROOT, make_settings, unique_version

pytestmark = [pytest.mark.chaos, pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]


def _stress_output():
    spec = importlib.util.spec_from_file_location("stress_output", ROOT / "batch_code" / "stress_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def env(infra, tmp_path_factory):
    settings = make_settings(f"file://{tmp_path_factory.mktemp('chaos-bucket')}")
    manifest = release(settings, unique_version("v0.0.1-chaos"), Steps())
    return settings, manifest.version


def _run(settings, version, *params, job="stress-output"):
    lines: list[str] = []
    outcome = Controller(open_bucket(settings.bucket), LocalProvider(settings), lines.append, lines.append).run(
        RunRequest(job, version, params=params)
    )
    left = docker_client().containers.list(all=True, ignore_removed=True, filters={"label": f"run-id={outcome.run_id}"})
    return outcome, lines, left


def test_a_results_symlink_does_not_upload_what_it_points_to(env, tally):
    settings, version = env
    outcome, _, left = _run(settings, version, "mb=1", "link_to=/etc/mlbatch-release")
    tally["instances_left"] += len(left)
    bucket = open_bucket(settings.bucket)
    uploaded = sorted(bucket.list(runs.results_of(bucket, outcome.record)))
    names = [key.rsplit("/", 1)[-1] for key in uploaded]
    leaked = [name for name in names if name in ("escape", "inside-link", "a-fifo")]
    tally["files_leaked"] += len(leaked)
    assert outcome.exit_code == 0, outcome.result
    assert names == ["kept.txt"], f"uploaded {names}"
    log = bucket.read(runs.attempt_key(outcome.run_id, 1, "log"))
    for name in ("escape", "inside-link", "a-fifo"):
        assert f"skipped {name}".encode() in log, f"no line in the run's log says {name} was skipped"
    assert not left


def test_every_byte_of_a_big_awkward_output_reaches_the_bucket_log(env, tally):
    settings, version = env
    expected = b"".join(_stress_output().output(50))
    outcome, lines, left = _run(settings, version, "mb=50")
    tally["instances_left"] += len(left)
    log = open_bucket(settings.bucket).read(runs.attempt_key(outcome.run_id, 1, "log"))
    if expected not in log:
        tally["log_bytes_lost"] += max(len(expected) - len(log), 1)
    assert outcome.exit_code == 0, outcome.result
    complete = expected in log  # not asserted directly: pytest would print 50 MB
    assert complete, f"the log holds {len(log)} bytes, the job wrote {len(expected)}; tail {log[-200:]!r}"
    assert sum(len(line) for line in lines) < 64 * 1024 * 1024
    assert not left


def test_a_job_out_of_memory_is_killed_at_its_limit_and_recorded_as_such(env, tally):
    settings, version = env
    outcome, lines, left = _run(settings, version, "mb=1024", job="eat-memory")  # its catalog limit: 128 MB
    tally["instances_left"] += len(left)
    bucket = open_bucket(settings.bucket)
    attempt = runs.read_attempt(bucket, outcome.run_id, 1)
    assert outcome.exit_code == 137, outcome.result  # SIGKILL, the job's failure (not a reserved code)
    assert outcome.result["status"] == runs.FAILED
    assert outcome.result["message"].startswith("killed: out of memory at 128 MB limit"), outcome.result
    assert attempt.message == outcome.result["message"] and attempt.status == runs.FAILED
    # The agent survived the kill: it uploaded what the job wrote before and flushed the log after.
    assert [k.rsplit("/", 1)[-1] for k in bucket.list(runs.results_prefix(outcome.run_id, 1))] == ["before.txt"]
    log = bucket.read(runs.attempt_key(outcome.run_id, 1, "log")).decode()
    assert "holding 8 MB" in log and "held 1024 MB" not in log
    assert "job killed: out of memory at 128 MB limit" in log
    assert not left
