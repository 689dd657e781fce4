"""Every gcp task without Application Default Credentials, as a new user meets it: `invoke ...
--profile gcp` exits 111 with one message naming the ways to provide them, and no traceback.

The environment has no credentials anywhere google-auth looks (https://cloud.google.com/docs/authentication/application-default-credentials):
no GOOGLE_APPLICATION_CREDENTIALS, an empty HOME and CLOUDSDK_CONFIG (no gcloud application-default
login), and a metadata server address on a closed loopback port, so google-auth's probe of
169.254.169.254 is refused at once instead of timing out (and no real Google endpoint is asked).
A Packer new enough for the gcp profile is first on PATH: `release` refuses Debian's 1.6.6 (100)
before it looks for credentials, and this machine has that one. It is a stand-in that only answers
`packer version`: the release stops at the credentials, long before a bake."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from mlbatch.core.errors import ExitCode
from mlbatch.release.bake import PINNED_PACKER
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE

PROFILE = {
    "PROJECT": "my-ml-project",
    "BUCKET": "gs://my-ml-project-mlbatch",
    "REGISTRY": "europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
    "SERVICE_ACCOUNT": "mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
}


@pytest.fixture(scope="module")
def no_credentials(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "CLOUDSDK_CONFIG", "GOOGLE_CLOUD_PROJECT")
    }
    tools = home / "bin"
    tools.mkdir()
    (tools / "packer").write_text(f"#!/bin/sh\necho 'Packer v{PINNED_PACKER}'\n")
    (tools / "packer").chmod(0o755)
    env.update(HOME=str(home), CLOUDSDK_CONFIG=str(home / "gcloud"), GCE_METADATA_HOST=closed, GCE_METADATA_IP=closed)
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    env.update({f"INVOKE_MLBATCH_PROFILES_GCP_{key}": value for key, value in PROFILE.items()})
    return env


@pytest.mark.parametrize(
    "args",
    [
        ("release", "--version", "v9.9.9"),
        ("releases",),
        ("releases.show", "v1.0.0"),
        ("run-batch", "--job", "sleep", "--version", "v1.0.0"),
        ("run-batch", "--job", "sleep", "--version", "v1.0.0", "--sweep", "seconds=1,2"),
        ("runs",),
        ("runs.show", "sleep-20260101-000000-abcd"),
        ("runs.wait", "sleep-20260101-000000-abcd"),
        ("runs.cancel", "sleep-20260101-000000-abcd"),
        ("logs", "sleep-20260101-000000-abcd"),
        ("gc", "--dry-run"),
        ("images",),
        ("images.prune", "--keep", "3"),
        ("iam.check",),
    ],
    ids=lambda args: " ".join(args[:1] + tuple(a for a in args[1:] if a.startswith("--sweep"))),
)
def test_a_gcp_task_without_credentials_says_how_to_provide_them(no_credentials, args):
    result = subprocess.run(
        [INVOKE, *args, "--profile", "gcp"], cwd=ROOT, env=no_credentials, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == ExitCode.PERMISSION_DENIED, output
    assert "Traceback" not in output and output.count("Application Default Credentials") == 1, output
    for way in ("gcloud auth application-default login", "GOOGLE_APPLICATION_CREDENTIALS", "workload identity federation"):
        assert way in result.stderr, result.stderr
    assert "metadata server" in result.stderr
