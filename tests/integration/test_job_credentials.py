"""Jobs do not get the VM's credentials by default (issue 16), end to end on the local profile:
the real controller, local instance, agent and job container on the real engine. Every
request of these tests goes to 127.0.0.1: the bucket behind its IAM model, the fake metadata
server and STS, the agent's token server (a local instance's jobs that declare a network share
the host's, docs/architecture.md "Jobs and the VM's credentials").

- A job that declares nothing tries a metadata server on the host's loopback, where it could
  reach it if it shared the host's network (as every job did before), and gets nothing.
- A job that declares `google_access` gets a token of the runner downscoped to what it
  declares: the agent trades its VM token (from a fake metadata server) at a fake STS, and
  serves the result to the job on the host's loopback; the bucket behind the model of its IAM
  (tests/support/gcs_iam.py) enforces the runner's grants and the token's boundary. The
  controller talks to the bucket as the trigger identity and the agent as the runner (its
  Application Default Credentials from the metadata server): every identity is the one it
  would be on GCP. A model of IAM, not IAM. What keeps such a job off the VM's metadata
  server on a VM (the jobs bridge and its DOCKER-USER rule) is not shown here: see
  tests/unit/test_job_network.py and the live suite.
"""

from __future__ import annotations

import json
import os

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.local.infra import docker_client
from mlbatch.providers.local import LocalProvider
from mlbatch.release.flow import release
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.ui import Steps
from tests.conftest import make_settings, unique_version
from tests.support.fake_metadata import FakeMetadata
from tests.support.fake_sts import FakeSts
from tests.support.iam_world import PROJECT, RUNNER, iam_world

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]


def _run(settings, job, version, *params):
    outcome = Controller(open_bucket(settings.bucket), LocalProvider(settings), print, print).run(
        RunRequest(job, version, params=params)
    )
    left = docker_client().containers.list(all=True, ignore_removed=True, filters={"label": f"run-id={outcome.run_id}"})
    assert not left
    return outcome


def _probe(bucket, outcome) -> dict:
    """What the probe job wrote to its results, where the run's record says they are."""
    return json.loads(bucket.read(f"{runs.results_of(bucket, outcome.record)}/probe.json"))


@pytest.fixture(scope="module")
def local_release(infra, tmp_path_factory):
    settings = make_settings(f"file://{tmp_path_factory.mktemp('creds-bucket')}")
    return settings, release(settings, unique_version("v0.0.1-creds"), Steps()).version


def test_a_job_without_declared_access_gets_no_token(local_release, monkeypatch):
    settings, version = local_release
    metadata = FakeMetadata(RUNNER, PROJECT)  # on the host's loopback: a job on the host's network reaches it
    with metadata.running():
        outcome = _run(settings, "probe-credentials", version, f"metadata={metadata.host}")
    found = _probe(open_bucket(settings.bucket), outcome)
    assert outcome.exit_code == 0, outcome.result
    assert list(found["metadata"]) == ["given"], found  # nothing points it at a metadata server
    assert found["metadata"]["given"].startswith("URLError"), found  # no network: nothing answers, no token
    assert metadata.requests == [] and metadata.tokens_given == 0
    log = open_bucket(settings.bucket).read(runs.attempt_key(outcome.run_id, 1, "log"))
    assert b"job network: none" in log


@pytest.fixture
def world(gcs_emulator, tmp_path):
    """The bucket behind its IAM model, on 127.0.0.1 (the job shares the host's network)."""
    with iam_world(gcs_emulator, tmp_path) as made:
        yield made


def test_a_job_with_declared_access_reads_its_data_and_cannot_touch_a_release(world, gcs_emulator, monkeypatch):
    settings = make_settings(world.bucket)
    name = world.bucket.removeprefix("gs://")
    with world.as_identity("release"):
        version = release(settings, unique_version("v0.0.1-gcs-creds"), Steps()).version
    key = manifests.manifest_key(version)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)  # the data's owner puts it there, past IAM
    raw = open_bucket(world.bucket)
    raw.write("datasets/probe/data.txt", b"the job's data")
    before = raw.read(key)
    metadata = FakeMetadata(RUNNER, PROJECT, world.iam)
    sts = FakeSts(world.iam).start()
    try:
        with metadata.running(), world.as_identity("trigger"):
            for name_, value in {
                "GCE_METADATA_HOST": metadata.host,
                "GCE_METADATA_IP": metadata.host,
                "MLBATCH_STS_ENDPOINT": sts.token_url,
            }.items():
                monkeypatch.setenv(name_, value)
            outcome = _run(
                settings,
                "probe-credentials-gcs",
                version,
                f"bucket={name}",
                f"read=datasets/probe/data.txt,{key}",
                f"write=runs/JOB/RUN/scratch/out.txt,{key}",
            )
    finally:
        sts.stop()
        for variable in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "MLBATCH_STS_ENDPOINT"):
            os.environ.pop(variable, None)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    found = _probe(raw, outcome)
    assert outcome.exit_code == 0, outcome.result
    assert found["metadata"] == {"GCE_METADATA_HOST": "token"}, found  # the agent's server: its downscoped token
    assert found["read"] == {"datasets/probe/data.txt": 200, key: 403}, found  # the runner may read releases; the job may not
    assert found["write"] == {"runs/JOB/RUN/scratch/out.txt": 200, key: 403}, found
    assert raw.read(f"runs/probe-credentials-gcs/{outcome.run_id}/scratch/out.txt") == b"written by the job"
    assert raw.read(key) == before
    assert [e["account"] for e in sts.exchanges] == [RUNNER]
    assert (RUNNER, "storage.objects.create", f"projects/_/buckets/{name}/objects/{key}", False) in world.iam.decisions
    log = raw.read(runs.attempt_key(outcome.run_id, 1, "log"))
    assert b"job network: the host's (a local instance); Google credentials:" in log
    assert b"downscoped to read ['datasets/probe/'" in log and b"served at 127.0.0.1:" in log
