"""The Cloud Function as `gcloud functions deploy` would get it: `invoke schedule.export` writes
its source folder and env.yaml; a fresh venv is made from the folder's requirements.txt alone
(pip from PyPI, as the Python buildpack does); functions-framework serves main.py from that
folder, with env.yaml's variables as its whole configuration (no checkout, no invoke.yaml);
Pub/Sub's push is a messagePublished CloudEvent POSTed to it. The test profile points the
function at fake-gcs-server and the fake Compute API (API only: the instance runs nothing), and
its trust settings (invoke.yaml: trigger_jobs sleep and train-digits, trigger_version latest, a
maximum age of an hour) travel in env.yaml, so the function refuses what that deployment does not
trust: a stale message, a job not allowed, an old release or a pre-release under `latest`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shlex
import subprocess
import venv
from pathlib import Path

import pytest
import yaml

from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from tests.conftest import ROOT, repo_config
from tests.integration.helpers import INVOKE
from tests.integration.test_triggers import publish, serving
from tests.support.fake_compute import FakeCompute
from tests.support.gcs import create_bucket
from tests.support.releases import publish_release

pytestmark = pytest.mark.slow  # a venv from PyPI: a minute or two
PROJECT = "mlbatch-test"
VERSION = "v1.0.0"


@pytest.fixture(scope="module")
def exported(gcs_emulator, tmp_path_factory):
    """The export of a test-profile schedule whose fakes run for the module: (folder, fake, bucket)."""
    fake = FakeCompute(PROJECT, storage_emulator=gcs_emulator, boot_containers=False).start()
    profile = repo_config()["profiles"]["test"]
    fake.ready_for_runs(profile["region"], profile["network"], profile["service_account"])
    bucket = f"gs://mlbatch-function-{secrets.token_hex(4)}"
    create_bucket(bucket[5:])
    manifest = publish_release(open_bucket(bucket), VERSION)
    fake.add_image(manifest.vm_image.name, manifest.vm_image.ref)
    out = tmp_path_factory.mktemp("function")
    env = {
        **os.environ,
        "INVOKE_MLBATCH_PROFILES_TEST_BUCKET": bucket,
        "INVOKE_MLBATCH_PROFILES_TEST_COMPUTE_ENDPOINT": fake.endpoint,
    }
    argv = [INVOKE, "schedule.export", "--profile", "test", "--job", "sleep", "--cron", "0 3 * * *", "--output-dir", str(out)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    try:
        yield out, fake, bucket, done.stdout
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def function_venv(exported, tmp_path_factory) -> Path:
    """A venv with what the buildpack installs: requirements.txt of the source folder, nothing else."""
    out, *_ = exported
    env_dir = tmp_path_factory.mktemp("fn-venv")
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"]
    done = subprocess.run(pip, cwd=out / "source", capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def test_the_export_writes_what_gcloud_functions_deploy_needs(exported):
    out, _, bucket, printed = exported
    source = out / "source"
    assert sorted(p.name for p in source.iterdir()) == ["main.py", "mlbatch", "requirements.txt"]
    assert not list(source.rglob("__pycache__")) and not (source / "mlbatch" / "tests").exists()
    wanted = (source / "requirements.txt").read_text().split()
    for requirement in ("functions-framework>=3.5", "google-cloud-compute>=1.14", "google-cloud-storage>=2.14"):
        assert requirement in wanted
    deploy = next(shlex.split(line) for line in printed.splitlines() if line.startswith("gcloud functions deploy"))
    assert deploy[deploy.index("--source") + 1] == str(source)
    assert deploy[deploy.index("--env-vars-file") + 1] == str(out / "env.yaml")
    env = yaml.safe_load((out / "env.yaml").read_text())
    assert all(isinstance(v, str) for v in env.values()), "gcloud takes string values only"
    assert env["MLBATCH_SETTINGS_PROFILE"] == "test" and env["MLBATCH_SETTINGS_PROJECT"] == PROJECT
    assert env["MLBATCH_SETTINGS_BUCKET"] == bucket
    assert json.loads(env["MLBATCH_SETTINGS_ZONES"]) == repo_config()["profiles"]["test"]["zones"]
    assert json.loads(env["MLBATCH_SETTINGS_TRIGGER_JOBS"]) == ["sleep", "train-digits"]
    assert (env["MLBATCH_SETTINGS_TRIGGER_VERSION"], env["MLBATCH_SETTINGS_TRIGGER_MAX_AGE_SECONDS"]) == ("latest", "3600")
    assert sorted(p.name for p in (out / "iam").iterdir()) == ["topic-policy.json", "trigger-reads.json", "trigger-writes.json"]


def serve(env_dir: Path, source: Path, env: dict[str, str], log: Path):
    """functions-framework of the function's venv, run from the source folder alone (main.py, as the platform)."""
    return serving(env_dir / "bin" / "functions-framework", [], source, env, log)


def function_env(out: Path, gcs_emulator: str, **overrides: str) -> dict[str, str]:
    """What the platform gives the function: env.yaml's variables; here also the emulator's address."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out), "STORAGE_EMULATOR_HOST": gcs_emulator}
    return {**env, **yaml.safe_load((out / "env.yaml").read_text()), **overrides}


def test_the_function_runs_from_its_folder_and_starts_one_detached_run(exported, function_venv, gcs_emulator, tmp_path):
    out, fake, bucket_uri, _ = exported
    bucket = open_bucket(bucket_uri)
    log = tmp_path / "function.log"
    message_id = str(secrets.randbelow(10**15))
    body = json.dumps({"job": "sleep", "version": "latest", "params": {"seconds": 2}}).encode()
    with serve(function_venv, out / "source", function_env(out, gcs_emulator), log) as url:
        assert publish(url, message_id, body) == 200, log.read_text()
        assert publish(url, message_id, body) == 200, "a redelivery is acknowledged"
        assert publish(url, message_id, body) == 200, "and so is the next"
    (run_id,) = [
        r for r in runs.list_run_ids(bucket, "sleep") if runs.read_spec(bucket, r).idempotency_key == f"pubsub-{message_id}"
    ]
    assert runs.read_spec(bucket, run_id).version == VERSION
    inserted = [b["name"] for m, p, b in fake.requests if m == "POST" and p.endswith("/instances")]
    assert inserted.count(f"mlb-{run_id}-1") == 1, "one instance, in the project the settings name"
    assert f"message {message_id}: run {run_id}" in log.read_text()
    assert log.read_text().count(f"idempotency key 'pubsub-{message_id}' already started run {run_id}") == 2


def test_the_function_refuses_what_its_deployment_does_not_trust(exported, function_venv, gcs_emulator, tmp_path):
    """Each is acknowledged (200: Pub/Sub must not redeliver it), logged with its reason, and starts nothing."""
    out, fake, bucket_uri, _ = exported
    bucket = open_bucket(bucket_uri)
    publish_release(bucket, "v0.9.0")
    publish_release(bucket, "v1.1.0-rc.1")  # newer than VERSION, but a pre-release: `latest` never runs it
    before, inserts = runs.list_run_ids(bucket), len(fake.requests)
    log = tmp_path / "untrusted.log"
    sleep = {"job": "sleep", "params": {"seconds": 2}}
    with serve(function_venv, out / "source", function_env(out, gcs_emulator), log) as url:
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)  # a backlog after an outage, redelivered by --retry
        assert publish(url, "3001", json.dumps(sleep).encode(), published=stale) == 200, log.read_text()
        assert publish(url, "3002", json.dumps({"job": "no-retries"}).encode()) == 200, log.read_text()
        assert publish(url, "3003", json.dumps({**sleep, "version": "v1.1.0-rc.1"}).encode()) == 200, log.read_text()
        assert publish(url, "3004", json.dumps({**sleep, "version": "v0.9.0"}).encode()) == 200, log.read_text()
    text = log.read_text()
    assert "message not run (exit code 100): message 3001 is stale: published" in text
    assert "more than trigger_max_age_seconds (3600); acknowledged, never run" in text
    assert "message 3002: job 'no-retries' is not allowed here; trigger_jobs: sleep, train-digits" in text
    assert "message 3003: pre-release v1.1.0-rc.1 refused: this deployment runs the latest release" in text
    assert f"message 3004: version v0.9.0 refused: the latest release is {VERSION}" in text
    assert runs.list_run_ids(bucket) == before and len(fake.requests) == inserts, "no run, not one API call"


def test_a_bad_setting_or_a_refused_permission_is_logged_and_acknowledged(exported, function_venv, gcs_emulator, tmp_path):
    """Both would fail every redelivery the same way: the function acknowledges (200) and says why."""
    out, fake, bucket_uri, _ = exported
    bucket = open_bucket(bucket_uri)
    before = runs.list_run_ids(bucket)
    body = json.dumps({"job": "sleep", "version": VERSION}).encode()

    log = tmp_path / "bad-setting.log"
    bad = function_env(out, gcs_emulator, MLBATCH_SETTINGS_ZONES='["mars-north1-a"]')
    with serve(function_venv, out / "source", bad, log) as url:  # it starts: nothing is read at import
        assert publish(url, "2001", body) == 200, log.read_text()
    assert "message not run (exit code 100): invalid mlbatch.profiles.test.zones" in log.read_text()

    log = tmp_path / "denied.log"
    fake.denied_permissions.add("compute.instances.create")
    try:
        with serve(function_venv, out / "source", function_env(out, gcs_emulator), log) as url:
            assert publish(url, "2002", body) == 200, log.read_text()
    finally:
        fake.denied_permissions.discard("compute.instances.create")
    assert "message not run (exit code 111)" in log.read_text() and "compute.instances.create" in log.read_text()
    assert runs.list_run_ids(bucket) == before, "neither started a run"
