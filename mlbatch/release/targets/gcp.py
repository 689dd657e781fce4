"""The gcp release target (gcp profile; the test profile points it at emulators).

Credentials come from Application Default Credentials via google-auth (a key file in
GOOGLE_APPLICATION_CREDENTIALS, workload identity, or the metadata server); the registry
login is user `oauth2accesstoken` with an access token, as Artifact Registry expects, so
no gcloud and no docker credential helper is needed. The image is baked, promoted and
discarded by mlbatch.release.gce_image, and tested on a VM by mlbatch.release.vmtest.
"""

from __future__ import annotations

from pathlib import Path

from mlbatch.core.errors import PermissionDenied
from mlbatch.core.manifest import Container, VmImage
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE
from mlbatch.core.settings import Settings
from mlbatch.local.base_images import BuildBase
from mlbatch.local.infra import docker_client
from mlbatch.release import adc, containers, gce_image, vmtest
from mlbatch.release.bake import BakeRequest, BakeSource
from mlbatch.release.targets.base import BakedImage
from mlbatch.ui import Say


class GcpTarget:
    name = "gcp"

    def __init__(self, settings: Settings):
        self.settings = settings
        self._credentials = None

    @property
    def credentials(self):
        self._credentials = adc.refreshed(self._credentials) if self._credentials else adc.credentials()
        return self._credentials

    def preflight(self) -> None:
        from mlbatch.release import preflight

        preflight.check(self.settings, self.credentials, adc.principal(self.credentials))

    def push_containers(self, root: Path, version: str, say: Say, base_image: str = "") -> dict[str, Container]:
        import docker

        host = self.settings.registry.split("/")[0]
        auth = {"username": adc.REGISTRY_USER, "password": self.credentials.token}
        client = docker_client()
        say(f"logging in to {host} as {adc.REGISTRY_USER} with a token for {adc.principal(self.credentials)}")
        try:
            client.login(registry=host, reauth=True, **auth)
        except docker.errors.APIError as exc:
            raise PermissionDenied(
                f"the registry {host} refused the token of {adc.principal(self.credentials)}: {exc.explanation} "
                "(grant roles/artifactregistry.writer on the repository, and enable artifactregistry.googleapis.com)"
            ) from None
        return containers.build_and_push(client, root / "containers", self.settings.registry, version, say, auth, base_image)

    def bake_source(self, base: BuildBase | None) -> BakeSource:
        # The GCE bake starts from the source family's newest image, not from the containers' base.
        return gce_image.bake_source(self.settings)

    def find_image(self, input_hash: str) -> VmImage | None:
        return gce_image.find_image(self.settings, input_hash)

    def bake_image(self, root: Path, request: BakeRequest, containers: dict[str, Container], say: Say) -> VmImage:
        return gce_image.bake(self.settings, root, request, containers, say)

    def test_image(self, root: Path, image: VmImage, prepulled: dict[str, Container], say: Say) -> None:
        vmtest.test_image_on_vm(self.settings, root, image, say, prepulled=[c.ref for c in prepulled.values()])

    def promote(self, image: VmImage, say: Say) -> VmImage:
        return gce_image.promote(self.settings, image, say)

    def discard(self, image: VmImage, say: Say) -> None:
        gce_image.discard(self.settings, image, say)

    # --- retention ---------------------------------------------------------------------

    def _compute(self):
        from mlbatch.release.targets.gcp_images import ImageAdmin

        return ImageAdmin(self.settings, None if self.settings.compute_endpoint else self.credentials)

    def list_images(self) -> list[BakedImage]:
        return self._compute().list(f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"')

    def retire_image(self, image: BakedImage, say: Say) -> None:
        admin = self._compute()
        if image.status != "DEPRECATED":
            admin.deprecate(image.name)
            say(f"deprecated {image.name}")
        admin.delete(image.name)
        say(f"deleted {image.name}")
