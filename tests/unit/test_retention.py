"""images.prune's plan: which baked images the releases still need (mlbatch.release.retention)."""

from __future__ import annotations

import dataclasses

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import FileBucket
from mlbatch.release.retention import kept_releases, prune_plan
from mlbatch.release.targets.base import BakedImage
from tests.support.releases import publish_release

OLD = "2026-01-01T00:00:00+00:00"


class BakedImages:
    """The two calls of the release line that retention makes (list_images, retire_image), over a list."""

    name = "images"

    def __init__(self, names: list[str]):
        self.images = [BakedImage(name, f"mlbatch-vm-image:{name}", OLD, "READY") for name in names]

    def list_images(self) -> list[BakedImage]:
        return list(self.images)


def publish(bucket, version: str, image: str) -> None:
    manifest = publish_release(FileBucket(bucket.root.parent / "scratch"), version)  # a manifest to vary
    vm_image = dataclasses.replace(manifest.vm_image, name=image, ref=f"mlbatch-vm-image:{image}")
    manifests.publish(bucket, dataclasses.replace(manifest, vm_image=vm_image))


@pytest.fixture
def bucket(tmp_path):
    return FileBucket(tmp_path / "bucket")


def test_pre_releases_do_not_count_so_the_image_latest_resolves_to_is_kept(bucket):
    publish(bucket, "v1.0.0", "img-release")
    for i in (1, 2, 3):
        publish(bucket, f"v1.1.0-rc.{i}", f"img-rc-{i}")
    assert manifests.resolve_version(bucket, "latest") == "v1.0.0"
    kept, retire = prune_plan(BakedImages(["img-release", "img-rc-1", "img-rc-2", "img-rc-3"]), bucket, 1, 24)
    assert "img-release" in {use.image.name for use, _ in kept}, "latest must stay runnable"
    assert retire == []  # the newer release candidates are kept too: runs may name them


def test_keep_counts_releases_and_old_pre_releases_are_retired(bucket):
    publish(bucket, "v0.9.0-rc.1", "img-0")
    publish(bucket, "v0.9.0", "img-1")
    publish(bucket, "v1.0.0-rc.1", "img-2")
    publish(bucket, "v1.0.0", "img-3")
    kept, retire = prune_plan(BakedImages(["img-0", "img-1", "img-2", "img-3"]), bucket, 1, 24)
    assert {use.image.name for use, _ in kept} == {"img-3"}
    assert {use.image.name for use in retire} == {"img-0", "img-1", "img-2"}


@pytest.mark.parametrize(
    "versions, keep, kept",
    [
        (["v1.0.0", "v1.1.0-rc.2", "v1.1.0-rc.10"], 1, ["v1.0.0", "v1.1.0-rc.2", "v1.1.0-rc.10"]),
        (["v0.1.0", "v0.2.0-rc.1", "v0.2.0", "v0.3.0"], 2, ["v0.2.0", "v0.3.0"]),
        (["v0.0.0-demo.1", "v0.0.0-demo.2"], 3, ["v0.0.0-demo.1", "v0.0.0-demo.2"]),  # no release yet: nothing to lose
    ],
)
def test_kept_releases(versions, keep, kept):
    assert kept_releases(versions, keep) == kept
