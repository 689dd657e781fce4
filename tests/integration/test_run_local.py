"""`invoke run-batch` end to end on the local profile: real engine, registry, baked image, agent."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from mlbatch.core import labels, runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import BadInput, ExitCode, NotFound
from mlbatch.local.infra import docker_client
from mlbatch.providers.local import LocalProvider
from mlbatch.release.flow import release
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.run.records import collect_garbage, list_runs, read_logs
from mlbatch.ui import Steps
from tests.conftest import make_settings, unique_version
from tests.integration.helpers import invoke, start_invoke, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes


@pytest.fixture(scope="module")
def env(infra, tmp_path_factory):
    """A release in a bucket of its own, and a controller that records what it prints."""
    settings = make_settings(f"file://{tmp_path_factory.mktemp('runs-bucket')}")
    manifest = release(settings, unique_version(), Steps())
    return settings, manifest.version


def controller(settings, lines=None):
    lines = [] if lines is None else lines
    return Controller(open_bucket(settings.bucket), LocalProvider(settings), lines.append, lines.append)


def instances(run_id=None):
    filters = {
        "label": labels.checkout_filter(make_settings("file:///unused").state_dir) + ([f"run-id={run_id}"] if run_id else [])
    }
    return docker_client().containers.list(all=True, ignore_removed=True, filters=filters)


def test_train_digits_succeeds_and_leaves_results(env):
    settings, version = env
    lines: list[str] = []
    outcome = controller(settings, lines).run(RunRequest("train-digits", version, params=("n_estimators=20",)))
    assert outcome.exit_code == 0, outcome.result
    bucket = open_bucket(settings.bucket)
    result = json.loads(bucket.read(runs.result_key(outcome.run_id)))
    assert result["status"] == "succeeded"
    assert result["provenance"]["code_sha256"] and result["provenance"]["container"].count("@sha256:") == 1
    results = runs.results_of(bucket, outcome.record)
    metrics = json.loads(bucket.read(f"{results}/metrics.json"))
    assert metrics["accuracy"] > 0.8 and metrics["n_estimators"] == 20
    assert bucket.exists(f"{results}/model.joblib")
    assert any("metrics:" in line for line in lines), "the job's output reached the caller live"
    assert "metrics:" in read_logs(bucket, outcome.run_id), "the log outlives the instance"
    assert {"create", "boot", "pull", "fetch", "run", "upload", "teardown"} <= set(outcome.phases)
    assert instances(outcome.run_id) == []


def test_job_exit_code_is_the_run_exit_code(env):
    settings, version = env
    result = invoke(settings.bucket, "run-batch", "--job", "fail-on-purpose", "--version", version, "--param", "exit_code=3")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "failing on purpose with exit code 3" in result.stdout
    run = [r for r in list_runs(open_bucket(settings.bucket), "fail-on-purpose")][-1]
    assert (run.status, run.exit_code) == ("failed", "3")
    assert instances() == []


def test_a_job_that_outlives_its_timeout_is_stopped(env):
    settings, version = env
    start = time.monotonic()
    outcome = controller(settings).run(RunRequest("sleep", version, params=("seconds=120",), timeout_seconds=3))
    assert outcome.exit_code == ExitCode.TIMEOUT
    assert outcome.result["status"] == "timeout"
    assert time.monotonic() - start < 60
    assert instances(outcome.run_id) == []


def test_the_same_idempotency_key_gives_one_run(env):
    settings, version = env
    request = RunRequest("sleep", version, params=("seconds=1",), idempotency_key="rundeck-exec-4711")
    first = controller(settings).run(request)
    second = controller(settings).run(request)
    assert second.attached and second.run_id == first.run_id and second.exit_code == first.exit_code == 0
    keyed = [r for r in list_runs(open_bucket(settings.bucket), "sleep") if r.run_id == first.run_id]
    assert len(keyed) == 1


def test_a_duplicate_trigger_attaches_to_a_running_run(env):
    settings, version = env
    request = RunRequest("sleep", version, params=("seconds=4",), idempotency_key="slot-2026-11-23T00:00")
    outcomes = {}
    first = threading.Thread(target=lambda: outcomes.setdefault("first", controller(settings).run(request)))
    first.start()
    wait_for(lambda: instances() and instances()[0].status == "running", what="the first run's instance")
    lines: list[str] = []
    second = controller(settings, lines).run(request)
    first.join(timeout=120)
    assert second.attached and second.run_id == outcomes["first"].run_id
    assert instances() == [], "this checkout's containers are gone (other checkouts may share the engine)"
    assert any("tick" in line for line in lines), "the second caller followed the log"


@pytest.mark.parametrize(
    ("job", "version", "params", "error", "message"),
    [
        ("no-such-job", None, (), BadInput, "unknown job 'no-such-job'.*expected one of"),
        ("train-digits", "1.0", (), BadInput, "invalid version '1.0'"),
        ("train-digits", None, ("learning_rate=0.1",), BadInput, "unknown param 'learning_rate'"),
        ("sleep", None, ("message=hi;rm -rf /",), BadInput, "expected a value matching"),
        ("sleep", None, ("message=$(id)",), BadInput, "expected a value matching"),
        ("train-digits", "v99.0.0", (), NotFound, "release v99.0.0 does not exist"),
        ("Bad_Job", None, (), BadInput, "invalid job name"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(env, job, version, params, error, message):
    settings, released = env
    bucket = open_bucket(settings.bucket)
    runs_before = list(bucket.list("runs"))
    with pytest.raises(error, match=message) as info:
        controller(settings).run(RunRequest(job, version or released, params=params))
    assert info.value.exit_code in (ExitCode.BAD_INPUT, ExitCode.NOT_FOUND)
    assert list(bucket.list("runs")) == runs_before
    assert instances() == []


def test_bad_input_through_the_cli_gets_its_reserved_exit_code(env):
    settings, version = env
    result = invoke(settings.bucket, "run-batch", "--job", "train-digits", "--version", version, "--param", "x=1")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "unknown param 'x'" in result.stderr


@pytest.mark.parametrize("moment", ["[mlbatch] running", "tick 1/"], ids=["as-the-job-starts", "mid-job"])
def test_sigterm_to_the_controller_cancels_and_cleans_up(env, moment):
    settings, version = env
    proc = start_invoke(settings.bucket, "run-batch", "--job", "sleep", "--version", version, "--param", "seconds=120")
    try:
        instance = wait_for(lambda: [c for c in instances() if c.status == "running"], what="a running instance")[0]
        run_id = instance.labels["run-id"]
        wait_for(lambda: moment in instance.logs().decode(), what=moment)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.CANCELLED, output
    result = runs.read_json(open_bucket(settings.bucket), runs.result_key(run_id))
    assert result["status"] == "cancelled" and "SIGTERM" in result["message"]
    assert instances() == []


def test_sigterm_to_the_instance_is_a_preemption_and_the_run_retries(env):
    settings, version = env
    outcomes = {}
    thread = threading.Thread(
        target=lambda: outcomes.setdefault("run", controller(settings).run(RunRequest("sleep", version, params=("seconds=8",))))
    )
    thread.start()
    instance = wait_for(lambda: [c for c in instances() if c.name.endswith("-1") and c.status == "running"], what="attempt 1")[0]
    wait_for(lambda: "tick 1/" in instance.logs().decode(), what="the job to start")
    killed_at = time.time()
    instance.kill(signal="SIGTERM")
    thread.join(timeout=180)
    outcome = outcomes["run"]
    assert outcome.exit_code == 0 and outcome.result["attempt"] == 2
    bucket = open_bucket(settings.bucket)
    first = runs.read_json(bucket, runs.attempt_key(outcome.run_id, 1, "attempt.json"))
    assert first["status"] == "preempted"
    recorded_after = runs.dt.datetime.fromisoformat(first["finished"]).timestamp() - killed_at
    assert recorded_after < 25, f"the preempted attempt was recorded {recorded_after:.1f}s after SIGTERM"
    assert "attempt 1" in read_logs(bucket, outcome.run_id) and "attempt 2" in read_logs(bucket, outcome.run_id)
    assert instances() == []


def test_gc_removes_only_our_expired_or_orphaned_instances(env):
    settings, _ = env
    client = docker_client()
    image = "debian:bookworm-slim"
    ours = {**labels.checkout_labels(settings.state_dir), "role": "instance"}
    expired = client.containers.run(
        image, ["sleep", "300"], detach=True, name="mlb-gc-expired", labels={**ours, "expiry": str(int(time.time()) - 10)}
    )
    alive = client.containers.run(
        image, ["sleep", "300"], detach=True, name="mlb-gc-alive", labels={**ours, "expiry": str(int(time.time()) + 3600)}
    )
    orphan = client.containers.run(
        image, ["true"], detach=True, name="mlb-gc-orphan", labels={**ours, "expiry": str(int(time.time()) + 3600)}
    )
    foreign = client.containers.run(
        image, ["sleep", "300"], detach=True, name="not-ours", labels={"role": "instance", "expiry": "1"}
    )
    try:
        orphan.wait()
        provider = LocalProvider(settings)
        planned = dict(collect_garbage(provider, dry_run=True))
        assert planned == {"mlb-gc-expired": "expired", "mlb-gc-orphan": "stopped (orphaned)"}
        assert len(instances()) == 3, "a dry run removes nothing"
        assert dict(collect_garbage(provider, dry_run=False)) == planned
        assert [c.name for c in instances()] == ["mlb-gc-alive"]
        foreign.reload()
        assert foreign.status == "running"
    finally:
        for container in (expired, alive, orphan, foreign):
            subprocess.run(["docker", "rm", "-f", container.id], capture_output=True)


def test_runs_and_logs_commands(env):
    settings, version = env
    listed = invoke(settings.bucket, "runs", "--job", "train-digits")
    run_id = listed.stdout.splitlines()[1].split()[0]  # under the header
    assert "succeeded" in listed.stdout
    logs = invoke(settings.bucket, "logs", run_id)
    assert logs.returncode == 0 and "metrics:" in logs.stdout
    missing = invoke(settings.bucket, "logs", "train-digits-20000101-000000-zzzz")
    assert missing.returncode == ExitCode.NOT_FOUND and "does not exist" in missing.stderr
