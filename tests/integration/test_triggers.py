"""The ways in for schedulers, through their real entry points on the local profile: invoke
(run-batch --detach, runs.wait, runs.cancel, runs.show), functions-framework over HTTP with a
Pub/Sub CloudEvent, and an exported Rundeck command run by a shell as Rundeck would."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode
from mlbatch.release.flow import release
from mlbatch.triggers import deploy
from mlbatch.ui import Steps
from tests.conftest import make_settings, unique_version
from tests.integration.helpers import ROOT, cli_env, invoke
from tests.integration.test_run_local import instances, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes


@pytest.fixture(scope="module")
def env(infra, tmp_path_factory):
    """A release that is not a pre-release (so `latest` finds it), in a bucket of its own."""
    settings = make_settings(f"file://{tmp_path_factory.mktemp('triggers-bucket')}")
    version = unique_version("v0")
    release(settings, version, Steps())
    return settings, version


def detached(bucket_uri, *args):
    result = invoke(bucket_uri, "run-batch", "--detach", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    assert runs.read_spec(open_bucket(bucket_uri), run_id) is not None, result.stdout
    return run_id, result


def test_detach_returns_the_run_id_and_runs_wait_gives_the_attached_exit_code(env):
    settings, version = env
    run_id, started = detached(settings.bucket, "--job", "sleep", "--version", "latest", "--param", "seconds=3")
    assert f"--version latest resolved to {version}" in started.stdout
    assert runs.read_spec(open_bucket(settings.bucket), run_id).version == version, "the resolved version is recorded"
    waited = invoke(settings.bucket, "runs.wait", run_id)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "tick 3/3" in waited.stdout and "succeeded" in waited.stdout
    assert instances(run_id) == []

    failing, _ = detached(settings.bucket, "--job", "fail-on-purpose", "--version", version, "--param", "exit_code=7")
    assert invoke(settings.bucket, "runs.wait", failing).returncode == 7, "the job's own code, as attached"


def test_runs_show_and_list_through_invoke(env):
    settings, version = env
    run_id, _ = detached(settings.bucket, "--job", "train-digits", "--version", version, "--param", "n_estimators=10")
    assert invoke(settings.bucket, "runs.wait", run_id).returncode == 0
    shown = invoke(settings.bucket, "runs.show", run_id)
    assert shown.returncode == 0, shown.stderr
    for text in (f"run {run_id}", "provenance", "attempt 1", "spot", "e2-standard-4", "accuracy", "est. cost", "2024-06-01"):
        assert text in shown.stdout, text
    view = json.loads(invoke(settings.bucket, "runs.show", run_id, "--json").stdout)
    (attempt,) = view["attempts"]
    assert (attempt["zone"], attempt["provisioning"], attempt["status"]) == ("local", "spot", "succeeded")
    assert set(attempt["phases"]) == {"create", "boot", "pull", "fetch", "run", "upload", "teardown"}
    assert attempt["priced_as"] == "e2-standard-4 spot in europe-west4" and attempt["cost_usd"] > 0
    assert view["provenance"]["git_sha"] and view["provenance"]["container"].count("@sha256:") == 1
    assert view["metrics"]["n_estimators"] == 10 and view["spec"]["params"]["n_estimators"] == 10

    listed = invoke(settings.bucket, "runs", "--job", "train-digits", "--status", "succeeded", "--since", "1h", width=200)
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["RUN", "VERSION", "CREATED", "STATUS", "EXIT", "TIME", "METRICS"]
    assert any(row.startswith(run_id) and "accuracy=" in row for row in rows)
    narrow = invoke(settings.bucket, "runs", "--job", "train-digits", "--status", "succeeded", "--since", "1h").stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    assert any(row.startswith(run_id) and "accuracy=" in row for row in narrow.splitlines()), "the run id whole, its metrics"
    as_json = json.loads(invoke(settings.bucket, "runs", "--status", "failed", "--json").stdout)
    assert all(r["status"] == "failed" for r in as_json)
    bad = invoke(settings.bucket, "runs", "--status", "finished")
    assert bad.returncode == ExitCode.BAD_INPUT and "expected one of running, succeeded" in bad.stderr


def test_runs_cancel_ends_a_detached_run_and_deletes_its_instance(env):
    settings, version = env
    run_id, _ = detached(settings.bucket, "--job", "sleep", "--version", version, "--param", "seconds=120")
    instance = wait_for(lambda: [c for c in instances(run_id) if c.status == "running"], what="the instance")[0]
    wait_for(lambda: "tick 1/" in instance.logs().decode(), what="the job to start")
    cancelled = invoke(settings.bucket, "runs.cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    assert instances(run_id) == []
    result = runs.read_result(open_bucket(settings.bucket), run_id)
    assert (result.status, result.recorded_by) == ("cancelled", "controller")
    assert invoke(settings.bucket, "runs.wait", run_id).returncode == ExitCode.CANCELLED
    missing = invoke(settings.bucket, "runs.cancel", "sleep-20000101-000000-zzzz")
    assert missing.returncode == ExitCode.NOT_FOUND


def test_a_detached_run_nobody_waits_for_removes_its_own_instance(env):
    settings, version = env
    run_id, _ = detached(settings.bucket, "--job", "sleep", "--version", version, "--param", "seconds=1")
    wait_for(lambda: runs.read_result(open_bucket(settings.bucket), run_id), what="the run to end")
    wait_for(lambda: instances(run_id) == [], what="the instance to remove itself")
    assert runs.read_result(open_bucket(settings.bucket), run_id).status == "succeeded"


def test_skip_exits_113_and_starts_nothing_while_a_run_of_the_job_is_going(env):
    settings, version = env
    run_id, _ = detached(settings.bucket, "--job", "sleep-exclusive", "--version", version, "--param", "seconds=120")
    try:
        second = invoke(settings.bucket, "run-batch", "--job", "sleep-exclusive", "--version", version)
        assert second.returncode == ExitCode.SKIPPED_OVERLAP == 113, second.stdout + second.stderr
        assert f"run {run_id} of job sleep-exclusive is still going" in second.stderr
        # Other worktrees share this engine: look only at this job's instances.
        ours = [c.labels["run-id"] for c in instances() if c.labels.get("job") == "sleep-exclusive"]
        assert ours == [run_id], "the skipped trigger created no instance"
    finally:
        assert invoke(settings.bucket, "runs.cancel", run_id).returncode == 0
    assert instances(run_id) == []


# --- Cloud Scheduler -> Pub/Sub -> the function, run by functions-framework ----------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(functions_framework: Path, argv: list[str], cwd: Path, env: dict[str, str], log: Path):
    """functions-framework on a loopback port of its own, `pubsub_trigger` as a CloudEvent function; yields its URL."""
    port = _free_port()
    command = [str(functions_framework), *argv, "--target", "pubsub_trigger", "--signature-type", "cloudevent"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def listening():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            assert proc.poll() is None, log.read_text()
            return False

        wait_for(listening, timeout=60, what="functions-framework to listen")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def function(env, tmp_path):
    """functions-framework serving mlbatch.triggers.function.pubsub_trigger on loopback, on the local profile
    (the export's folder, on the test profile, is tests/integration/test_function_deploy.py)."""
    settings, _ = env
    log = tmp_path / "function.log"
    source = ["--source", str(ROOT / "mlbatch" / "triggers" / "function.py")]
    deployed = dataclasses.replace(settings, trigger_jobs=("sleep",))  # the deployment allows sleep
    environment = {**os.environ, **deploy.environment(deployed)}  # the settings as the export's env.yaml carries them
    with serving(Path(sys.executable).parent / "functions-framework", source, ROOT, environment, log) as url:
        yield url, log


def publish(url: str, message_id: str, body: bytes, published: dt.datetime | None = None) -> int:
    """POST what Pub/Sub's push to a Cloud Function sends: a messagePublished CloudEvent, published
    `published` (default: now; Pub/Sub stamps publishTime in UTC with nanoseconds)."""
    publish_time = (published or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    event = {
        "specversion": "1.0",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/mlbatch-test/topics/mlbatch-trigger",
        "id": message_id,
        "time": publish_time,
        "datacontenttype": "application/json",
        "data": {
            "message": {"data": base64.b64encode(body).decode(), "messageId": message_id, "publishTime": publish_time},
            "subscription": "projects/mlbatch-test/subscriptions/eventarc-mlbatch-trigger",
        },
    }
    request = urllib.request.Request(
        url, data=json.dumps(event).encode(), headers={"Content-Type": "application/cloudevents+json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_pubsub_message_starts_one_detached_run_even_when_redelivered(env, function):
    settings, version = env
    url, log = function
    bucket = open_bucket(settings.bucket)
    message_id = str(secrets.randbelow(10**15))
    body = json.dumps({"job": "sleep", "version": "latest", "params": {"seconds": 2}}).encode()
    assert publish(url, message_id, body) == 200, log.read_text()
    (run_id,) = [
        r for r in runs.list_run_ids(bucket, "sleep") if runs.read_spec(bucket, r).idempotency_key == f"pubsub-{message_id}"
    ]
    spec = runs.read_spec(bucket, run_id)
    assert spec.version == version and spec.params["seconds"] == 2
    assert publish(url, message_id, body) == 200, "a redelivery is acknowledged"
    keyed = [r for r in runs.list_run_ids(bucket, "sleep") if runs.read_spec(bucket, r).idempotency_key == f"pubsub-{message_id}"]
    assert keyed == [run_id], "and starts nothing new"
    assert f"message {message_id}: run {run_id}" in log.read_text()
    assert invoke(settings.bucket, "runs.wait", run_id).returncode == 0
    assert instances(run_id) == []


def test_a_message_that_can_never_run_is_acknowledged_and_starts_nothing(env, function):
    settings, _ = env
    url, log = function
    before = runs.list_run_ids(open_bucket(settings.bucket))
    assert publish(url, "1001", b"not json") == 200
    assert publish(url, "1002", json.dumps({"job": "sleep", "params": {"seconds": "many"}}).encode()) == 200
    assert runs.list_run_ids(open_bucket(settings.bucket)) == before
    text = log.read_text()
    assert "message not run (exit code 100): message 1001: data is not base64 of JSON" in text
    assert "invalid param seconds='many'" in text


# --- Rundeck --------------------------------------------------------------------------------


def test_the_exported_rundeck_step_runs_and_a_retried_execution_starts_no_second_run(env, tmp_path):
    settings, version = env
    exported = invoke(
        settings.bucket,
        "rundeck.export",
        "--output-dir",
        str(tmp_path),
        "--invoke-path",
        str(Path(sys.executable).parent / "invoke"),
    )
    assert exported.returncode == 0, exported.stderr
    (definition,) = yaml.safe_load((tmp_path / "fail-on-purpose.yaml").read_text())
    (step,) = definition["sequence"]["commands"]
    options = {o["name"]: o.get("value", "") for o in definition["options"]}
    options["version"] = version
    command = step["exec"].replace("${job.execid}", "77")
    for name, value in options.items():
        command = command.replace(f"${{option.{name}}}", value)
    for _ in range(2):  # Rundeck runs the step through the node's shell; a retry has the same execid
        done = subprocess.run(["sh", "-c", command], env=cli_env(settings.bucket), capture_output=True, text=True, timeout=600)
        assert done.returncode == 3, done.stdout + done.stderr
    bucket = open_bucket(settings.bucket)
    keyed = [r for r in runs.list_run_ids(bucket, "fail-on-purpose") if runs.read_spec(bucket, r).idempotency_key == "rundeck-77"]
    assert len(keyed) == 1
