"""The release line: what the release flow asks of any place a release goes to.

Like the provider line (mlbatch/providers/base.py) for runs: the flow in
mlbatch/release/flow.py is one list of steps, and a target says how each is done there.
`local` pushes to the loopback registry and bakes with Packer's docker source; `gcp`
pushes to Artifact Registry with Application Default Credentials and bakes with Packer's
googlecompute source (the `test` profile is the gcp target against emulators).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

from mlbatch.core.manifest import Container, VmImage
from mlbatch.local.base_images import BuildBase
from mlbatch.release.bake import BakeRequest, BakeSource
from mlbatch.ui import Say


@dataclasses.dataclass(frozen=True)
class BakedImage:
    """An image a bake left behind, as retention sees it."""

    name: str
    ref: str  # what a manifest's vm_image.ref names: local tag or GCE self link
    created: str  # ISO 8601
    status: str  # READY, DEPRECATED, ...


class ReleaseTarget(Protocol):
    name: str

    def preflight(self) -> None:
        """Refuse (PermissionDenied) before any side effect when an API, a permission or a service is missing."""

    def push_containers(self, root: Path, version: str, say: Say, base_image: str = "") -> dict[str, Container]:
        """Build containers/*/Dockerfile FROM `base_image` (their BASE_IMAGE), push each, return them pinned by digest."""

    def bake_source(self, base: BuildBase | None) -> BakeSource:
        """Where a bake starts from beyond the repository (the base image, or the GCE source image), for the input hash."""

    def find_image(self, input_hash: str) -> VmImage | None:
        """A served image baked from identical inputs, younger than max_image_age_days, if any (reused, not baked)."""

    def bake_image(self, root: Path, request: BakeRequest, containers: dict[str, Container], say: Say) -> VmImage:
        """Bake a candidate image: not served until `promote`."""

    def test_image(self, root: Path, image: VmImage, prepulled: dict[str, Container], say: Say) -> None:
        """Run tests/image (testinfra) against the image, checking that `prepulled` are in it; raise when a test fails."""

    def promote(self, image: VmImage, say: Say) -> VmImage:
        """Serve a tested candidate; return the image as the manifest pins it."""

    def discard(self, image: VmImage, say: Say) -> None:
        """Remove a candidate that failed its tests: nothing that looks released is left."""

    def list_images(self) -> list[BakedImage]:
        """Images baked by mlbatch (label managed-by=mlbatch), oldest first."""

    def retire_image(self, image: BakedImage, say: Say) -> None:
        """Deprecate, then delete, an image no kept release names."""
