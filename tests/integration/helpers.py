"""Helpers for the end-to-end tests: the CLI as a user runs it, and bucket snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

INVOKE = str(Path(sys.executable).parent / "invoke")


def cli_env(bucket: str) -> dict[str, str]:
    return {**os.environ, "INVOKE_MLBATCH_PROFILES_LOCAL_BUCKET": bucket}


def invoke(bucket: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([INVOKE, *args], cwd=ROOT, env=cli_env(bucket), capture_output=True, text=True, timeout=timeout)


def snapshot(bucket_uri: str) -> dict[str, bytes]:
    from mlbatch.core.bucket import open_bucket

    bucket = open_bucket(bucket_uri)
    return {key: bucket.read(key) for prefix in ("releases", "batch_code", "runs") for key in bucket.list(prefix)}


def fake_compute_settings(compute_endpoint: str, bucket: str = "gs://unused-bucket", **overrides):
    """The test profile (the gcp code path) pointed at a fake Compute API."""
    from mlbatch.core.settings import load_settings
    from tests.conftest import repo_config

    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket=bucket, compute_endpoint=compute_endpoint, **overrides)
    return load_settings(config, ROOT)
