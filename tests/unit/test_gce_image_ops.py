"""Image management against the fake Compute API alone (no Docker): promotion, discard and
retention wait out global operations as Google runs them. An image insert takes a minute or
more (fake.latencies), globalOperations.wait holds up to 2 minutes and may answer before DONE
or with a transient error; the release must not fail at any of these after its image tests passed."""

from __future__ import annotations

import pytest

from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.manifest import VmImage
from mlbatch.core.settings import load_settings
from mlbatch.release import gce_image
from mlbatch.release.targets.gcp import GcpTarget
from tests.conftest import ROOT, repo_config
from tests.support.fake_compute import FakeCompute, Faults, Latencies

PROJECT = "mlbatch-test"
HASH = "ab" * 32


@pytest.fixture(scope="module")
def api():
    fake = FakeCompute(PROJECT, boot_containers=False).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(api):
    api.faults, api.latencies = Faults(), Latencies.quick()
    yield api
    api.faults, api.latencies = Faults(), Latencies.quick()
    api.images.clear()


def settings_for(fake):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://unused-bucket", compute_endpoint=fake.endpoint)
    return load_settings(config, ROOT, env={})


def add_candidate(fake, name="mlbatch-v1-0-0-20260101000000-candidate") -> VmImage:
    labels = {"managed-by": "mlbatch", "version": "v1-0-0", "git-sha": "abc", "input-hash": HASH[:63]}
    link = fake.add_image(name, "unused:latest", family="mlbatch-candidate", labels=labels)
    fake.images[name]["description"] = "mlbatch v1.0.0 abc"
    return VmImage(name=name, ref=link, input_hash=HASH, baked_by_version="v1.0.0")


def test_promotion_waits_out_a_transient_error_of_the_wait(fake):
    """A 503 from globalOperations.wait is the service saying "try again", not a failed release."""
    fake.faults.reply_errors = {"globalOperations.wait": ["backendError"]}
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lambda line: None)
    assert fake.images[served.name]["status"] == "READY" and fake.calls["globalOperations.wait"] >= 2


def test_promotion_repeats_a_wait_that_answers_before_done(fake):
    """The wait "might return after zero seconds"; the insert is still RUNNING then."""
    fake.latencies.image_insert = 2.0
    fake.faults.early_waits = 3
    lines: list[str] = []
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lines.append)
    assert fake.images[served.name]["status"] == "READY" and "mlbatch-v1-0-0-20260101000000-candidate" not in fake.images


def test_retention_waits_out_a_transient_error_of_the_wait(fake):
    add_candidate(fake, name="mlbatch-old")
    target = GcpTarget(settings_for(fake))
    (image,) = target.list_images()
    fake.faults.reply_errors = {"globalOperations.wait": ["backendError", "backendError"]}
    target.retire_image(image, lambda line: None)
    assert "mlbatch-old" not in fake.images


def test_an_image_operation_that_fails_is_reported_with_its_exit_code(fake):
    """A 403 on the image insert names the permission and exits 111, not a traceback."""
    fake.faults.reply_errors = {"images.insert": ["forbidden"]}
    with pytest.raises(MlbatchError) as info:
        gce_image.promote(settings_for(fake), add_candidate(fake), lambda line: None)
    assert info.value.exit_code == ExitCode.PERMISSION_DENIED and "compute.images.insert" in str(info.value)


@pytest.mark.slow
def test_promotion_outlasts_an_image_insert_longer_than_a_minute(fake):
    """As on GCE: the copy takes longer than 60 s and the wait holds up to 2 minutes, so a client
    that gives up on a wait after 60 s fails a release whose image tests passed (issue 15, item 3).
    Real time on purpose: a client timeout cannot be shortened from outside (about 65 s)."""
    fake.latencies.image_insert = 65.0
    lines: list[str] = []
    served = gce_image.promote(settings_for(fake), add_candidate(fake), lines.append)
    assert fake.images[served.name]["status"] == "READY"
    assert any(line.startswith("promoting") and "still running after" in line for line in lines), lines  # progress
