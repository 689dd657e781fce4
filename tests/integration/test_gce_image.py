"""Candidate images: find_image, promote and discard against the fake Compute API (no bake here:
the candidate is registered directly; tests/integration/test_gce_bake.py bakes one with Packer)."""

from __future__ import annotations

import pytest

from mlbatch.core.errors import BadInput
from mlbatch.core.manifest import AGENT_FEATURES, VmImage
from mlbatch.release import gce_image
from tests.integration.helpers import fake_compute_settings
from tests.support.fake_compute import FakeCompute, Latencies

PROJECT = "mlbatch-test"
HASH = "ab" * 32


@pytest.fixture
def fake():
    fake = FakeCompute(PROJECT, latencies=Latencies.quick()).start()
    yield fake
    fake.stop()


def settings_for(fake):
    return fake_compute_settings(fake.endpoint)


def add_candidate(fake, name="mlbatch-v1-0-0-20260101000000-candidate", family="mlbatch-candidate"):
    labels = {"managed-by": "mlbatch", "version": "v1-0-0", "git-sha": "abc", "input-hash": HASH[:63]}
    link = fake.add_image(name, "debian:bookworm-slim", family=family, labels=labels)
    fake.images[name]["description"] = "mlbatch v1.0.0 abc"
    # baked by this checkout (its input hash): this checkout's agent
    return VmImage(name=name, ref=link, input_hash=HASH, baked_by_version="v1.0.0", agent_features=AGENT_FEATURES)


def image_names(fake, family):
    return sorted(n for n, i in fake.images.items() if i["family"] == family)


def test_promote_serves_the_candidate_under_its_image_name_and_removes_the_candidate(fake):
    settings = settings_for(fake)
    lines: list[str] = []
    candidate = add_candidate(fake)
    assert gce_image.find_image(settings, HASH) is None  # a candidate is not served: no reuse yet

    served = gce_image.promote(settings, candidate, lines.append)

    assert served.name == "mlbatch-v1-0-0-20260101000000"
    assert served.ref == f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/{served.name}"
    assert image_names(fake, "mlbatch") == [served.name]
    assert image_names(fake, "mlbatch-candidate") == []
    assert fake.images[served.name]["labels"]["input-hash"] == HASH[:63]
    assert fake.images[served.name]["status"] == "READY"
    assert gce_image.find_image(settings, HASH) == served
    assert gce_image.find_image(settings, "cd" * 32) is None


def test_discard_leaves_no_image_and_is_idempotent(fake):
    settings = settings_for(fake)
    candidate = add_candidate(fake)
    gce_image.discard(settings, candidate, lambda line: None)
    assert fake.images == {}
    gce_image.discard(settings, candidate, lambda line: None)  # already gone: nothing to do
    assert gce_image.find_image(settings, HASH) is None


def test_promote_and_discard_refuse_an_image_that_is_not_a_candidate(fake):
    settings = settings_for(fake)
    served = add_candidate(fake, name="mlbatch-v0-9-0-20250101000000", family="mlbatch")
    for action in (gce_image.promote, gce_image.discard):
        with pytest.raises(BadInput, match="not the candidate family"):
            action(settings, served, lambda line: None)
    assert image_names(fake, "mlbatch") == [served.name]


def test_find_image_skips_deprecated_and_foreign_images(fake):
    settings = settings_for(fake)
    served = gce_image.promote(settings, add_candidate(fake), lambda line: None)
    fake.images[served.name]["deprecated"] = {"state": "DEPRECATED"}
    assert gce_image.find_image(settings, HASH) is None
    fake.images[served.name]["deprecated"] = {"state": "ACTIVE"}
    fake.images[served.name]["labels"]["managed-by"] = "someone-else"
    assert gce_image.find_image(settings, HASH) is None


def test_an_image_from_a_disk_url_without_projects_is_refused_as_the_real_api_does(fake):
    """Debian's Packer 1.6.6 build sends this URL (google-api-go >= 0.36 base path); GCE answers 400."""
    from google.api_core import exceptions as gexc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    images = compute_v1.ImagesClient(
        transport="rest", client_options={"api_endpoint": fake.endpoint}, credentials=AnonymousCredentials()
    )
    image = compute_v1.Image(
        name="mlbatch-x", source_disk=f"https://compute.googleapis.com/compute/v1/{PROJECT}/zones/europe-west4-a/disks/packer-1"
    )
    with pytest.raises(gexc.BadRequest, match="The URL is malformed"):
        images.insert(project=PROJECT, image_resource=image)
    assert fake.images == {}
