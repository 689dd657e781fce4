"""A whole run on the local profile against a gs:// bucket that fails under it: the instance's
agent and the controller both reach fake-gcs-server through the FaultProxy, which answers
503/429 or drops connections during log flushes, result uploads and record writes. The run's
outcome, its records, its log and its results must come out exactly as without faults."""

from __future__ import annotations

import secrets

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import PART_MARK, open_bucket
from mlbatch.local.infra import docker_client
from mlbatch.providers.local import LocalProvider
from mlbatch.release.flow import release
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.ui import Steps
from tests.chaos.test_hostile_run import _stress_output
from tests.conftest import make_settings, unique_version
from tests.support.fault_proxy import FaultProxy
from tests.support.gcs import create_bucket

pytestmark = [pytest.mark.chaos, pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]


@pytest.fixture(scope="module")
def gcs_release(infra, gcs_emulator):
    name = f"chaos-run-{secrets.token_hex(4)}"
    create_bucket(name)
    settings = make_settings(f"gs://{name}")
    manifest = release(settings, unique_version("v0.0.1-faults"), Steps())
    return settings, manifest.version


FAULTS = [
    ("compose", "drop-after", 2, "attempts/1/log"),  # a log chunk composed in, its answer lost
    ("upload", "503", 2, "attempts/1/log"),
    ("metadata", "429", 1, "attempts/1/log"),
    ("upload", "drop-after", 1, "results/kept.txt"),
    ("upload", "503", 1, "attempt.json"),
    ("upload", "drop-after", 1, "result.json"),  # the success marker stored, its answer lost
    ("download", "503", 2, "result.json"),  # the controller reading the success marker
]


def test_a_run_through_a_failing_bucket_ends_right_and_loses_nothing(gcs_release, gcs_emulator, monkeypatch, tally):
    settings, version = gcs_release
    with FaultProxy(gcs_emulator).running() as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)  # the instance inherits it
        for kind, action, times, name in FAULTS:
            proxy.inject(kind, action, times, name_contains=name)
        bucket = open_bucket(settings.bucket)
        outcome = Controller(bucket, LocalProvider(settings), lambda _: None, lambda _: None).run(
            RunRequest("stress-output", version, params=("mb=5", "link_to=/etc/hostname"))
        )
        injected = proxy.injected
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)  # the proxy is gone: check the bucket directly
    left = docker_client().containers.list(all=True, ignore_removed=True, filters={"label": f"run-id={outcome.run_id}"})
    tally["instances_left"] += len(left)
    tally["faults_injected"] += injected
    bucket = open_bucket(settings.bucket)
    log = bucket.read(runs.attempt_key(outcome.run_id, 1, "log"))
    expected = b"".join(_stress_output().output(5))
    complete = expected in log
    if not complete:
        tally["log_bytes_lost"] += max(len(expected) - len(log), 1)
    results = sorted(key.rsplit("/", 1)[-1] for key in bucket.list(runs.results_of(bucket, outcome.record)))
    parts = [key for key in bucket.list(runs.run_prefix(outcome.run_id)) if PART_MARK in key]
    tally["files_leaked"] += len([r for r in results if r != "kept.txt"])
    assert outcome.exit_code == 0, outcome.result
    assert outcome.record.status == runs.SUCCEEDED and outcome.record.recorded_by == runs.AGENT
    assert complete, f"log has {len(log)} bytes, the job wrote {len(expected)}"
    assert log.count(b"END-OF-OUTPUT") == 1, "a chunk went in twice"
    assert results == ["kept.txt"] and not parts
    assert injected >= 6, f"only {injected} faults were hit: {[(f.kind, f.name_contains, f.injected) for f in proxy.faults]}"
    assert not left
    tally["faults_survived"] += injected
