"""The Drone release step, run as Drone runs it, against the emulators.

`.drone.yml`'s release step is read, not restated: its environment with each `from_secret`
filled from a table of secrets, Drone's own variables (DRONE_TAG, ...), and its commands run
one after the other in a shell from the checkout. The engine is the dind service's socket as
the step sees it (DOCKER_HOST; here a socket of its own relaying to this machine's engine).

What differs from a real pipeline, each for a reason:
- the profile is `test`, not `gcp` (gcp refuses emulators by design): the step's
  INVOKE_MLBATCH_PROFILE and the INVOKE_MLBATCH_PROFILES_GCP_* names of its secrets are read
  as their TEST_ counterparts, and the emulators' endpoints are added;
- Packer: HashiCorp's download cannot be reached from here, so MLBATCH_PACKER_DIR hands the
  script this machine's Packer (Debian's 1.6.6 build, which the test profile allows because
  the intercepting proxy repairs its one bad URL; the release says so);
- the `apt-get` setup line is not run: this machine has those packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import open_bucket
from tests.conftest import ROOT, repo_config, unique_version
from tests.integration.test_release_gcp_e2e import cloud  # noqa: F401 - the emulated world, a module of its own here
from tests.support.engine_socket import engine_socket
from tests.support.gcp_world import PROJECT
from tests.support.gcs import create_bucket

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]
STEP = next(s for s in yaml.safe_load((ROOT / ".drone.yml").read_text())["steps"] if s["name"] == "release")
SETUP = ("apt-get ",)


def step_environment(secrets: dict[str, str]) -> dict[str, str]:
    """The step's `environment` as Drone sets it: literal values, and secrets by name (unset when missing)."""
    env = {}
    for name, value in STEP["environment"].items():
        if isinstance(value, dict):
            if value["from_secret"] not in secrets:
                continue
            value = secrets[value["from_secret"]]
        env[name] = str(value)
    return env


def on_test_profile(env: dict[str, str]) -> dict[str, str]:
    """The one substitution: the gcp profile's names read as the test profile's."""
    assert env["INVOKE_MLBATCH_PROFILE"] == "gcp", "the step releases on the gcp profile"
    return {
        name.replace("INVOKE_MLBATCH_PROFILES_GCP_", "INVOKE_MLBATCH_PROFILES_TEST_"): value
        for name, value in {**env, "INVOKE_MLBATCH_PROFILE": "test"}.items()
    }


def test_the_release_step_runs_as_drone_runs_it(cloud, tmp_path):  # noqa: F811
    world, proxy = cloud
    bucket = f"gs://mlbatch-drone-{int(time.time())}"
    create_bucket(bucket[5:])
    version = unique_version("v0.0.1-drone")
    secrets = {
        "gcp_project": PROJECT,
        "gcp_bucket": bucket,
        "gcp_registry": f"{world.registry}/mlbatch",
        "gcp_runner_service_account": repo_config()["profiles"]["test"]["service_account"],
        "gcp_release_key": Path(world.key_file).read_text(),
    }
    drone = {"CI": "true", "DRONE": "true", "DRONE_TAG": version, "DRONE_BUILD_EVENT": "tag"}
    drone["DRONE_COMMIT_REF"] = f"refs/tags/{version}"
    emulators = {f"INVOKE_MLBATCH_PROFILES_TEST_{k.upper()}": v for k, v in world.profile(bucket).items()}
    packer_dir = tmp_path / "packer"
    packer_dir.mkdir()
    (packer_dir / "packer").symlink_to(shutil.which("packer"))
    # The machine (PATH, HOME, the network's proxy and metadata edges), without the key the
    # fixture exported: the step gets its credentials from the gcp_release_key secret only.
    machine = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}

    with engine_socket() as dind:
        env = {**machine, **on_test_profile(step_environment(secrets)), **drone, **emulators}
        assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock", "the step names the dind service's socket"
        env["DOCKER_HOST"] = dind.docker_host
        env["MLBATCH_PACKER_DIR"] = str(packer_dir)
        outputs = []
        for command in STEP["commands"]:
            if command.startswith(SETUP):
                continue
            done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        print(outputs[-1][-3000:])
        assert dind.connections > 0, "the containers were built and pushed through the step's DOCKER_HOST"

    manifest = manifests.load(open_bucket(bucket), version)
    assert manifest.vm_image.ref.startswith(f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/")
    assert all(c.repository.startswith(world.registry) for c in manifest.containers.values())
    assert "allowed on the test profile only" in outputs[-1], "the release says why Debian's Packer may bake here"
    assert world.oauth.grants, "credentials came from the key the script wrote from the secret"
    assert world.compute.instances == {} and world.compute.disks == {}
    leftovers = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("tmp*") if _holds_key(p, secrets["gcp_release_key"])]
    assert leftovers == [], "the key file is removed when the release ends"


def _holds_key(path: Path, key: str) -> bool:
    try:
        return path.is_file() and path.read_text() == key
    except (OSError, UnicodeDecodeError):
        return False


def test_the_release_step_needs_the_key_or_a_federation_config():
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "MLBATCH_RELEASE_KEY")}
    env.update(on_test_profile(step_environment({})), DRONE_TAG="v9.9.9")
    done = subprocess.run(["bash", "-c", "scripts/release-ci"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 111, done.stdout + done.stderr
    assert "set the gcp_release_key secret" in done.stderr
