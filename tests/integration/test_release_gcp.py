"""`invoke release --profile test`: the gcp release code path against emulators.

Credentials are real google-auth Application Default Credentials from a service-account key
whose token_uri is a loopback token endpoint (tests/support/fake_oauth.py); the registry is
a second docker-registry that requires the `oauth2accesstoken` login with that token; the
bucket is fake-gcs-server; the preflight asks fakes of Service Usage and Resource Manager
(tests/support/fake_iam.py); images live in the fake Compute API.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode, PermissionDenied
from mlbatch.core.gcp_base import REGISTRY_USER
from mlbatch.local.infra import docker_client
from mlbatch.release import containers, preflight
from mlbatch.release.flow import StepFailed, release
from mlbatch.release.targets.gcp import GcpTarget
from mlbatch.ui import Steps
from tests.conftest import ROOT, unique_version
from tests.integration.helpers import snapshot
from tests.support.fake_compute import FakeCompute
from tests.support.fake_oauth import FakeOAuth
from tests.support.gcp_world import PROJECT, TOKEN, gcp_world, registry_tags

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("infra")]


@pytest.fixture(scope="module")
def world(infra, gcs_emulator, tmp_path_factory):
    with gcp_world(gcs_emulator, tmp_path_factory.mktemp("adc")) as w:
        yield w


@pytest.fixture
def bucket(world):
    from tests.support.gcs import create_bucket

    name = f"mlbatch-rel-{secrets.token_hex(4)}"
    create_bucket(name)
    return f"gs://{name}"


# --- preflight -------------------------------------------------------------------------


def test_preflight_lists_everything_missing_in_one_message_before_any_side_effect(world, bucket):
    world.iam.granted -= {"compute.images.create", "iam.serviceAccounts.actAs"}
    world.iam.enabled -= {"artifactregistry.googleapis.com", "batch.googleapis.com"}
    version = unique_version()
    try:
        result = world.cli(bucket, "release", "--version", version)
    finally:
        world.iam.granted, world.iam.enabled = set(preflight.ASKED), set(preflight.SERVICES)
    assert result.returncode == ExitCode.PERMISSION_DENIED, result.stdout + result.stderr
    message = result.stderr
    assert "failed at step 'preflight'" in message
    assert "API artifactregistry.googleapis.com is not enabled" in message
    assert "API batch.googleapis.com is not enabled (needed to run the release's sweeps" in message
    assert "compute.images.create: grant roles/compute.storageAdmin" in message
    assert "iam.serviceAccounts.actAs: grant roles/iam.serviceAccountUser" in message
    assert "mlbatch-release@mlbatch-test.iam.gserviceaccount.com" in message  # who lacks them
    assert snapshot(bucket) == {}  # nothing written
    assert version not in registry_tags(world, "trainer")
    assert world.oauth.grants, "the token came from the token endpoint, through google-auth"


def test_preflight_refuses_missing_credentials(world, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(StepFailed, match="(?s)failed at step 'preflight'.*Application Default Credentials") as info:
        release(world.settings(bucket), unique_version(), Steps())
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED
    assert snapshot(bucket) == {}


def test_a_key_the_token_endpoint_does_not_know_is_refused(world, bucket, tmp_path, monkeypatch):
    stranger = FakeOAuth("never-issued")  # another key with the same token_uri: signature fails
    key = json.loads(stranger.write_key(tmp_path / "stranger.json").read_text())
    key["token_uri"] = world.oauth.token_uri
    (tmp_path / "stranger.json").write_text(json.dumps(key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "stranger.json"))
    with pytest.raises(StepFailed, match="(?s)preflight.*refused the Application Default Credentials.*Invalid JWT Signature"):
        release(world.settings(bucket), unique_version(), Steps())
    assert snapshot(bucket) == {}


# --- containers to the registry ----------------------------------------------------------


def test_containers_are_pushed_with_the_adc_token_and_pinned_by_digest(world):
    version = unique_version()
    pinned = GcpTarget(world.settings("gs://unused-bucket")).push_containers(ROOT, version, lambda line: None)
    trainer = pinned["trainer"]
    assert trainer.repository == f"{world.registry}/mlbatch/trainer" and trainer.digest.startswith("sha256:")
    assert version in registry_tags(world, "trainer")
    data = docker_client().images.get_registry_data(
        f"{trainer.repository}:{version}", auth_config={"username": REGISTRY_USER, "password": TOKEN}
    )
    assert data.id == trainer.digest


def test_the_registry_refuses_an_unauthenticated_push(world):
    # Anonymous before a token-auth registry (tests/support/registry.py: a token granting nothing),
    # the engine reports "denied: requested access to the resource is denied"; before htpasswd auth,
    # "no basic auth credentials". Either is a refusal (containers.REFUSED).
    with pytest.raises(PermissionDenied, match="refused the push.*(no basic auth credentials|authentication required|denied)"):
        containers.build_and_push(
            docker_client(), ROOT / "containers", f"{world.registry}/mlbatch", unique_version(), lambda line: None
        )


def test_a_refused_token_stops_the_release_at_containers_without_manifest(world, bucket):
    world.oauth.token = "ya29.other-" + secrets.token_urlsafe(8)  # good for Google's APIs, not for the registry
    version = unique_version()
    try:
        result = world.cli(bucket, "release", "--version", version)
    finally:
        world.oauth.token = TOKEN
    assert result.returncode == ExitCode.PERMISSION_DENIED, result.stdout + result.stderr
    assert "failed at step 'containers'" in result.stderr
    assert "roles/artifactregistry.writer" in result.stderr
    assert snapshot(bucket) == {}
    assert not open_bucket(bucket).exists(manifests.manifest_key(version))


# --- the whole release ----------------------------------------------------------------------


def test_a_reused_image_failing_its_tests_on_a_vm_stops_the_release_and_stays_served(world, bucket):
    """The gcp flow end to end up to the image test: preflight, push, code to GCS, the image found by
    its input hash (as after an earlier bake), then tests/image over ssh on a temporary VM of the fake
    Compute API. The image is a bare guest (not provisioned), so the `vm` checks fail: the release
    stops at 'image tests' (103) without manifest, the test VM is gone, and the reused image, served
    by earlier releases, is not discarded."""
    from mlbatch.release import bake, gce_image
    from tests.support.fake_vm.guest import build_guest_image
    from tests.support.packer_edges import add_debian_cloud

    add_debian_cloud(world.compute)  # the release hashes the source image it would bake from
    digest = bake.input_hash(ROOT, gce_image.bake_source(world.settings(bucket)))
    name = f"mlbatch-earlier-{secrets.token_hex(3)}"
    world.compute.add_image(name, build_guest_image(), labels={"managed-by": "mlbatch", "input-hash": digest[:63]})
    world.compute.images[name]["description"] = "mlbatch v0.0.1-earlier 0000000"
    version, steps = unique_version(), Steps()
    with pytest.raises(StepFailed, match="(?s)failed at step 'image tests'.*test_agent_unit_enabled_on_vm") as info:
        release(world.settings(bucket), version, steps)
    assert info.value.exit_code == ExitCode.STEP_FAILED
    rows = {step: outcome for step, outcome, _ in steps.rows}
    assert rows["vm image"] == f"reused https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/{name}"
    assert rows["containers"].startswith("pushed") and rows["code bundle"].startswith("uploaded")
    assert not open_bucket(bucket).exists(manifests.manifest_key(version))
    assert name in world.compute.images and "deprecated" not in world.compute.images[name]
    assert not world.compute.instances, "the temporary test VM was deleted"


# --- retention ----------------------------------------------------------------------------


def _seed_image(fake: FakeCompute, name: str, created: str, ours: bool = True) -> None:
    fake.add_image(name, "mlbatch-vm-image:unused")
    fake.images[name]["labels"] = {"managed-by": "mlbatch"} if ours else {"team": "other"}
    fake.images[name]["creationTimestamp"] = created


def _publish(bucket: str, version: str, image: str, project: str = PROJECT) -> None:
    link = f"https://www.googleapis.com/compute/v1/projects/{project}/global/images/{image}"
    manifests.publish(
        open_bucket(bucket),
        manifests.Manifest(
            version=version,
            git_sha="0" * 40,
            created="2026-01-01T00:00:00+00:00",
            profile="test",
            vm_image=manifests.VmImage(name=image, ref=link, input_hash="0" * 64, baked_by_version=version),
            containers={},
            code=manifests.CodeBundle(uri=f"{bucket}/batch_code/{version}/batch_code.tar.gz", sha256="0" * 64, size=1),
            jobs={},
        ),
    )


def test_images_and_prune_keep_what_the_last_releases_name(world, bucket):
    fake, tag = world.compute, secrets.token_hex(3)
    old, young = "2026-01-01T00:00:00.000-00:00", time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
    named = [f"mlbatch-named-{tag}-{i}" for i in range(3)]
    fillers = [f"mlbatch-filler-{tag}-{i:02d}" for i in range(55)]  # more than one page of images.list
    for name in named + fillers:
        _seed_image(fake, name, old)
    _seed_image(fake, f"mlbatch-young-{tag}", young)
    _seed_image(fake, f"someone-elses-{tag}", old, ours=False)
    for version, image in zip(("v1.0.0", "v1.1.0", "v1.2.0"), named, strict=True):
        _publish(bucket, version, image)
    _publish(bucket, "v1.2.1", named[2])  # a release that reused its predecessor's image

    listed = world.cli(bucket, "images", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row["releases"] for row in json.loads(listed.stdout)}
    assert rows[named[2]] == ["v1.2.0", "v1.2.1"] and rows[named[0]] == ["v1.0.0"] and rows[fillers[-1]] == []
    assert f"someone-elses-{tag}" not in rows
    assert set(fillers) <= rows.keys()  # more than one page (50) of images.list, all followed

    before = dict(fake.images)
    dry = world.cli(bucket, "images.prune", "--keep", "3", "--min-age-hours", "1")
    assert dry.returncode == 0, dry.stderr
    assert f"would deprecate and delete {named[0]} (named only by v1.0.0)" in dry.stdout
    assert f"keep {named[1]} (named by v1.1.0)" in dry.stdout
    assert f"keep mlbatch-young-{tag} (younger than 1 h" in dry.stdout
    assert fake.images.keys() == before.keys() and not any(p.endswith("/deprecate") for _, p, _ in fake.requests)

    applied = world.cli(bucket, "images.prune", "--keep", "3", "--min-age-hours", "1", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert set(named[1:]) | {f"mlbatch-young-{tag}", f"someone-elses-{tag}"} <= fake.images.keys()
    assert not (set(fillers) | {named[0]}) & fake.images.keys()
    calls = [(verb, path.rsplit("/", 2)[-2:]) for verb, path, _ in fake.requests if named[0] in path]
    assert calls == [("POST", [named[0], "deprecate"]), ("DELETE", ["images", named[0]])]


def test_prune_refuses_keep_zero(world, bucket):
    result = world.cli(bucket, "images.prune", "--keep", "0")
    assert result.returncode == ExitCode.BAD_INPUT and "--keep 0" in result.stderr
