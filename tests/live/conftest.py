"""The live smoke suite: one pass against a real Google Cloud project, run by a person.

    invoke test.live                   # = MLBATCH_LIVE=1 pytest tests/live -m live

It releases a pre-release `v0.0.0-live.<ms>` (containers, code, a real Packer bake of a GCE
image, the image test on a VM, promotion), then runs `fail-on-purpose`, `sleep` and
`probe-credentials-gcs` (a job's own token on a VM, the VM's out of its reach), preempts a Spot
run, sweeps 2 tasks on Cloud Batch and checks that no instance and no candidate image is left.
It costs money (a few VM-minutes, an image, a bucket's objects) and takes 30-60 minutes.

Without MLBATCH_LIVE=1, the gcp profile's settings (invoke.yaml or INVOKE_MLBATCH_PROFILES_GCP_*)
or Application Default Credentials, every test is skipped, saying which is missing. Not part of
the default test run (pyproject's testpaths leave tests/live out).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

INVOKE = str(Path(sys.executable).parent / "invoke")
REQUIRED = ("project", "bucket", "registry", "service_account")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.live)


def _why_not() -> str:
    """'' when the suite can run; otherwise what is missing, in words a person can act on."""
    if os.environ.get("MLBATCH_LIVE") != "1":
        return "the live suite runs against a real project and costs money: run `invoke test.live` (sets MLBATCH_LIVE=1)"
    from invoke import Config

    config = Config(project_location=str(ROOT))
    config.load_project()
    config.load_shell_env()
    gcp = (config.get("mlbatch", {}).get("profiles") or {}).get("gcp") or {}
    missing = [key for key in REQUIRED if not gcp.get(key)]
    if missing:
        names = ", ".join(f"INVOKE_MLBATCH_PROFILES_GCP_{k.upper()}" for k in missing)
        return f"the gcp profile lacks {', '.join(missing)}: fill them in invoke.yaml or set {names}"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        return (
            "no Application Default Credentials: `gcloud auth application-default login`, "
            "GOOGLE_APPLICATION_CREDENTIALS (a key or a workload identity federation config), or the metadata server"
        )
    return ""


@pytest.fixture(scope="session")
def live():
    """The gcp settings, after the checks above; skips the whole suite with the reason otherwise."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    from invoke import Config

    from mlbatch.core.settings import load_settings

    config = Config(project_location=str(ROOT))
    config.load_project()
    config.load_shell_env()
    section = dict(config.get("mlbatch", {}))
    section["profile"] = "gcp"
    return load_settings(section, ROOT)


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`invoke ARGS --profile gcp` as a person runs it; output echoed for the record."""
    done = subprocess.run([INVOKE, *args, "--profile", "gcp"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"$ invoke {' '.join(args)} --profile gcp  -> exit {done.returncode}\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return done
