"""The local release target: the loopback registry, Packer's docker source, testinfra over docker://."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from mlbatch import ui
from mlbatch.core import labels as image_labels
from mlbatch.core.errors import MlbatchError
from mlbatch.core.manifest import Container, VmImage
from mlbatch.core.settings import Settings
from mlbatch.local import infra
from mlbatch.local.base_images import BuildBase
from mlbatch.release import bake, containers, imagetest
from mlbatch.release.bake import BakeRequest, BakeSource
from mlbatch.release.targets.base import BakedImage
from mlbatch.ui import Say


class LocalTarget:
    name = "local"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = infra.docker_client()

    def preflight(self) -> None:
        if not infra.engine_running():
            raise MlbatchError("the Docker engine is not reachable: run `invoke local.up`")
        if not infra.registry_running(self.settings.registry):
            raise MlbatchError(f"the registry {self.settings.registry} is not reachable: run `invoke local.up`")

    def push_containers(self, root: Path, version: str, say: Say, base_image: str = "") -> dict[str, Container]:
        return containers.build_and_push(
            self.client, root / "containers", self.settings.registry, version, say, base_image=base_image
        )

    def bake_source(self, base: BuildBase | None) -> BakeSource:
        # The base's image id: the pinned digest (with the CA layer), or the local fallback's bytes.
        if base is None:
            raise MlbatchError(f"the base image {self.settings.base_image} is not on this engine: run `invoke local.up`")
        return BakeSource.of(base.image_id, self.settings.ca_bundle)

    def find_image(self, input_hash: str) -> VmImage | None:
        return bake.find_local_image(self.client, input_hash, self.settings.max_image_age_days, ui.say)

    def bake_image(self, root: Path, request: BakeRequest, containers: dict[str, Container], say: Say) -> VmImage:
        return bake.bake_local(self.client, root, request, say)

    def test_image(self, root: Path, image: VmImage, prepulled: dict[str, Container], say: Say) -> None:
        # The local instance runs containers through the host's engine: nothing is pre-pulled into it.
        imagetest.test_local_image(
            self.client,
            root,
            image.ref,
            image.baked_by_version,
            image_labels.checkout_labels(self.settings.state_dir),
            image.agent_wheel_sha256,
            gpu=image.gpu,
        )

    def promote(self, image: VmImage, say: Say) -> VmImage:
        return image  # a local image is served by its tag, which only a tested bake keeps

    def discard(self, image: VmImage, say: Say) -> None:
        say(f"removing the untested image {image.ref}")
        self.client.images.remove(image.ref)

    def list_images(self) -> list[BakedImage]:
        found = []
        for image in self.client.images.list(name=bake.LOCAL_IMAGE_REPOSITORY, filters={"label": bake.INPUT_HASH_LABEL}):
            labels = image.labels or {}
            name = labels.get(image_labels.IMAGE_NAME, "")
            ref = f"{bake.LOCAL_IMAGE_REPOSITORY}:{name}"
            if name and ref in image.tags:
                created = dt.datetime.fromisoformat(image.attrs["Created"][:19]).isoformat(timespec="seconds")
                found.append(BakedImage(name=name, ref=ref, created=created, status="READY"))
        return sorted(found, key=lambda i: (i.created, i.name))

    def retire_image(self, image: BakedImage, say: Say) -> None:
        # Docker images have no deprecation state: removing the tag is the whole retirement.
        self.client.images.remove(image.ref)
        say(f"removed {image.ref}")
