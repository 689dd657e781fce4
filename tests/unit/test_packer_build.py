"""Which Packer may release to GCP: `invoke release --profile gcp` refuses Debian's 1.6.6+ds
build (and any Packer before 1.7, which cannot pin the googlecompute plugin) with 100 before any
side effect; the test profile, whose proxy repairs that build's one bad URL, allows it and says so."""

from __future__ import annotations

import os
import subprocess

import pytest

from mlbatch.release import bake
from tests.conftest import ROOT, repo_config
from tests.integration.helpers import INVOKE

UPSTREAM_OUTDATED = """Packer v1.15.4

Your version of Packer is out of date! The latest version
is 1.15.5. You can update by downloading from www.packer.io/downloads
"""


def test_the_version_is_read_from_packer_version_output():
    assert bake.parse_packer_version("Packer v1.6.6\n") == (1, 6, 6)
    assert bake.parse_packer_version(UPSTREAM_OUTDATED) == (1, 15, 4), "not the newest version it mentions"
    with pytest.raises(bake.MlbatchError, match="cannot read Packer's version"):
        bake.parse_packer_version("packer: command not found")


def old_packer() -> bake.PackerBuild:
    build = bake.packer_build()
    if build.version >= bake.PLUGINS_FROM:
        pytest.skip(f"{build.text}: this machine's Packer is one the gcp profile accepts")
    return build


def test_release_on_the_gcp_profile_refuses_an_old_packer_with_100_before_any_side_effect(tmp_path):
    build = old_packer()
    closed = "127.0.0.1:9"  # any Google call (bucket, token, metadata) would fail here, and differently
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")},
        "INVOKE_MLBATCH_PROFILES_GCP_PROJECT": "my-ml-project",
        "INVOKE_MLBATCH_PROFILES_GCP_BUCKET": "gs://my-ml-project-mlbatch",
        "INVOKE_MLBATCH_PROFILES_GCP_REGISTRY": "europe-west4-docker.pkg.dev/my-ml-project/mlbatch",
        "INVOKE_MLBATCH_PROFILES_GCP_SERVICE_ACCOUNT": "mlbatch-runner@my-ml-project.iam.gserviceaccount.com",
        "HTTPS_PROXY": f"http://{closed}",
        "GCE_METADATA_HOST": closed,
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [INVOKE, "release", "--version", "v9.9.9", "--profile", "gcp"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 100, result.stdout + result.stderr
    message = result.stderr
    assert f"Packer {'.'.join(map(str, build.version))} at {build.path}" in message
    if build.debian_package:
        assert f"Debian's package {build.debian_package}" in message
    for fix in ("scripts/install-packer", f"Packer {bake.PINNED_PACKER}", "packer init packer/", bake.SOURCE_DISK_BUG):
        assert fix in message, fix
    assert "Traceback" not in message and "preflight" not in result.stdout, "refused before any step ran"


def test_the_test_profile_allows_it_and_says_why():
    from mlbatch.core.settings import load_settings

    build = old_packer()
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"]["bucket"] = "gs://unused-bucket"
    said: list[str] = []
    bake.check_packer(load_settings(config, ROOT, env={}), said.append)
    assert said == [
        f"{build.text}: allowed on the test profile only, whose intercepting proxy repairs its "
        f"image insert's sourceDisk URL ({bake.SOURCE_DISK_BUG})"
    ]
