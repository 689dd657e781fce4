"""`invoke release` against the real engine, registry, Packer + Ansible and both bucket kinds."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess

import pytest

from mlbatch.core import labels
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import AlreadyExists, BadInput, ExitCode
from mlbatch.local import infra as local_infra
from mlbatch.local.infra import docker_client
from mlbatch.release import bake
from mlbatch.release.flow import StepFailed, release
from mlbatch.release.targets.local import LocalTarget
from mlbatch.ui import Steps
from tests.conftest import ROOT, make_settings, unique_version
from tests.integration.helpers import invoke, snapshot

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes


@pytest.fixture(scope="session")
def released(infra, file_bucket):
    """One real release for the session, on a file:// bucket."""
    settings = make_settings(file_bucket)
    version = unique_version()
    return settings, release(settings, version, Steps())


def test_release_pins_everything(released):
    settings, manifest = released
    stored = manifests.load(open_bucket(settings.bucket), manifest.version)
    assert stored == manifest
    trainer = manifest.containers["trainer"]
    assert trainer.repository == "127.0.0.1:5000/trainer" and trainer.digest.startswith("sha256:")
    # The digest is what the registry serves for that tag.
    registry_data = docker_client().images.get_registry_data(f"{trainer.repository}:{manifest.version}")
    assert registry_data.id == trainer.digest
    assert len(manifest.code.sha256) == 64
    image_labels = docker_client().images.get(manifest.vm_image.ref).labels
    assert image_labels[labels.INPUT_HASH] == manifest.vm_image.input_hash
    # The agent wheel the image installed, by its sha256 (the image test compared it with the image's own record).
    assert re.fullmatch(r"[0-9a-f]{64}", manifest.vm_image.agent_wheel_sha256)
    assert image_labels[labels.AGENT_WHEEL_SHA256] == manifest.vm_image.agent_wheel_sha256
    assert "train-digits" in manifest.jobs


def test_an_image_older_than_max_image_age_days_is_not_reused(released):
    _, manifest = released
    digest, lines = manifest.vm_image.input_hash, []
    assert bake.find_local_image(docker_client(), digest, 30, lines.append) == manifest.vm_image
    assert bake.find_local_image(docker_client(), digest, 0, lines.append) is None
    assert any("baking afresh" in line and "max_image_age_days 0" in line for line in lines), lines


def test_released_image_carries_provenance(released):
    _, manifest = released
    out = docker_client().containers.run(manifest.vm_image.ref, entrypoint=["cat", "/etc/mlbatch-release"], remove=True)
    assert f"MLBATCH_IMAGE_NAME={manifest.vm_image.name}" in out.decode()


def test_second_release_of_a_version_changes_nothing_and_exits_non_zero(released):
    settings, manifest = released
    before = snapshot(settings.bucket)
    with pytest.raises(AlreadyExists, match="releases are immutable"):
        release(settings, manifest.version, Steps())
    result = invoke(settings.bucket, "release", "--version", manifest.version)
    assert result.returncode == ExitCode.ALREADY_EXISTS, result.stdout + result.stderr
    assert "already exists" in result.stderr
    assert snapshot(settings.bucket) == before


def test_releases_list_and_show(released):
    settings, manifest = released
    listed = invoke(settings.bucket, "releases")
    assert manifest.version in listed.stdout
    shown = invoke(settings.bucket, "releases.show", manifest.version, "--format", "json")
    assert json.loads(shown.stdout)["code"]["sha256"] == manifest.code.sha256


@pytest.mark.parametrize("version", ["1.0.0", "v1.0", "latest", "v1.0.0;id"])
def test_bad_version_is_refused_before_any_side_effect(tmp_path, version):
    bucket = f"file://{tmp_path}"
    with pytest.raises(BadInput, match="expected vMAJOR.MINOR.PATCH"):
        release(make_settings(bucket), version, Steps())
    assert list(tmp_path.iterdir()) == []


def test_release_to_gcs(infra, gcs_bucket, released):
    """The gs:// path through google-cloud-storage; the bake is reused by its input hash."""
    settings = make_settings(gcs_bucket)
    steps = Steps()
    manifest = release(settings, unique_version(), steps)
    assert manifest.code.uri.startswith(gcs_bucket + "/batch_code/")
    assert manifests.list_versions(open_bucket(gcs_bucket)) == [manifest.version]
    assert any(name == "vm image" and outcome.startswith("reused") for name, outcome, _ in steps.rows)
    with pytest.raises(AlreadyExists):
        release(settings, manifest.version, Steps())


def _project_copy(tmp_path):
    """A copy of the project to break on purpose; same inputs, so the bake is reused."""
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns(".venv", ".venv-mitmproxy", ".mlbatch", ".git", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT, root, ignore=ignore)
    return root


def _assert_failed_at(settings, step, match):
    version = unique_version()
    with pytest.raises(StepFailed, match=f"(?s)failed at step '{step}'.*{match}") as info:
        release(settings, version, Steps())
    assert info.value.exit_code == ExitCode.STEP_FAILED
    assert not open_bucket(settings.bucket).exists(manifests.manifest_key(version))


def test_a_broken_container_stops_the_release_without_manifest(tmp_path, infra, released):
    root = _project_copy(tmp_path)
    (root / "containers" / "trainer" / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN exit 7\n")
    settings = dataclasses.replace(make_settings(f"file://{tmp_path / 'bucket'}"), project_root=root)
    _assert_failed_at(settings, "containers", "returned a non-zero code: 7")


def test_a_failing_image_test_stops_the_release_without_manifest(tmp_path, infra, released):
    root = _project_copy(tmp_path)
    (root / "tests" / "image" / "test_broken.py").write_text("def test_image_is_broken(host):\n    assert False\n")
    settings = dataclasses.replace(make_settings(f"file://{tmp_path / 'bucket'}"), project_root=root)
    _assert_failed_at(settings, "image tests", "test_image_is_broken")


def test_ansible_lint_and_packer_validate():
    subprocess.run(["ansible-lint", "--offline", "-q", "playbook.yml"], cwd=ROOT / "ansible", check=True)
    subprocess.run(["packer", "validate", "packer/mlbatch.pkr.hcl"], cwd=ROOT, check=True)
    bad = subprocess.run(
        ["packer", "validate", "-var", "version=1.0", "packer/mlbatch.pkr.hcl"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "semver git tag" in bad.stdout + bad.stderr


def test_a_fresh_image_that_fails_its_tests_is_discarded(tmp_path, infra, released):
    """New inputs, so a new bake; its failing test removes it: nothing that looks released is left."""
    root = _project_copy(tmp_path)
    defaults = root / "ansible" / "roles" / "provenance" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + f"# a change of input: {unique_version()}\n")
    (root / "tests" / "image" / "test_broken.py").write_text("def test_image_is_broken(host):\n    assert False\n")
    settings = dataclasses.replace(make_settings(f"file://{tmp_path / 'bucket'}"), project_root=root)
    _assert_failed_at(settings, "image tests", "test_image_is_broken")
    base = local_infra.current_base(settings, docker_client())
    digest = bake.input_hash(root, LocalTarget(settings).bake_source(base))
    assert bake.find_local_image(docker_client(), digest, 30, lambda line: None) is None
    assert not docker_client().images.list(filters={"label": f"{bake.INPUT_HASH_LABEL}={digest}"})
