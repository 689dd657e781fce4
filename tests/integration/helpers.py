"""Helpers for the end-to-end tests: the CLI as a user runs it, and bucket snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

INVOKE = str(Path(sys.executable).parent / "invoke")


def cli_env(bucket: str) -> dict[str, str]:
    return {**os.environ, "INVOKE_MLBATCH_PROFILES_LOCAL_BUCKET": bucket}


def invoke(bucket: str, *args: str, timeout: float = 600, width: int = 80) -> subprocess.CompletedProcess:
    """`invoke ARGS` as a scheduler or CI runs it: output to a pipe, listings fit `width` columns."""
    env = {**cli_env(bucket), "COLUMNS": str(width)}
    return subprocess.run([INVOKE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def start_invoke(bucket: str, *args: str) -> subprocess.Popen:
    """`invoke ARGS` started as a scheduler starts it, its output (stdout and stderr) on one pipe."""
    return subprocess.Popen(
        [INVOKE, *args], cwd=ROOT, env=cli_env(bucket), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def snapshot(bucket_uri: str) -> dict[str, bytes]:
    from mlbatch.core.bucket import open_bucket

    bucket = open_bucket(bucket_uri)
    return {key: bucket.read(key) for prefix in ("releases", "batch_code", "runs") for key in bucket.list(prefix)}


def run_batch_on_test_profile(overrides: dict[str, str], *args: str, **popen) -> subprocess.Popen:
    """`invoke run-batch --profile test ...` as a scheduler starts it, with INVOKE_MLBATCH_PROFILES_TEST_<KEY> overrides."""
    env = {**os.environ, **{f"INVOKE_MLBATCH_PROFILES_TEST_{key.upper()}": value for key, value in overrides.items()}}
    return subprocess.Popen(
        [INVOKE, "run-batch", "--profile", "test", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def settings_for_test_profile(bucket: str, **endpoints: str):
    """Settings of the `test` profile: the gcp code path against fake-gcs and the given fake APIs' endpoints."""
    from mlbatch.core.settings import load_settings
    from tests.conftest import repo_config

    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket=bucket, **endpoints)
    return load_settings(config, ROOT)


def release_for_test_profile(name: str, *fakes) -> tuple[str, str]:
    """A release as the gcp profile writes it (VM image by self link) in a new fake-gcs bucket, its
    image known to each fake API: (bucket, version). Needs the gcs_emulator fixture."""
    import dataclasses

    from mlbatch.core import manifest as manifests
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.flow import release
    from mlbatch.ui import Steps
    from tests.conftest import make_settings, unique_version
    from tests.support.gcs import create_bucket

    bucket = f"gs://mlbatch-{name}-{int(time.time())}"
    create_bucket(bucket[5:])
    local = release(make_settings(bucket), unique_version(), Steps())
    links = [fake.add_image(local.vm_image.name, local.vm_image.ref) for fake in fakes]
    gcp = dataclasses.replace(
        local, version=f"{local.version}.{name}", profile="test", vm_image=dataclasses.replace(local.vm_image, ref=links[0])
    )
    manifests.publish(open_bucket(bucket), gcp)
    return bucket, gcp.version


def fake_compute_settings(compute_endpoint: str, bucket: str = "gs://unused-bucket", **overrides):
    """The test profile (the gcp code path) pointed at a fake Compute API."""
    return settings_for_test_profile(bucket, compute_endpoint=compute_endpoint, **overrides)
