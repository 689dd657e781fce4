"""The gcp release target (gcp profile; the test profile points it at emulators).

Credentials are Application Default Credentials (mlbatch.core.gcp_base: a gcloud application-default
login, GOOGLE_APPLICATION_CREDENTIALS naming a key file or a workload identity federation
config, or the metadata server); the registry login is user `oauth2accesstoken` with an access
token, as Artifact Registry expects, so no gcloud and no docker credential helper is needed.
The image is baked, promoted, discarded and retired by mlbatch.release.gce_image, and tested
on a VM by mlbatch.release.vmtest.
"""

from __future__ import annotations

from pathlib import Path

from mlbatch.core import gcp_base
from mlbatch.core.errors import PermissionDenied
from mlbatch.core.manifest import Container, VmImage
from mlbatch.core.names import MANAGED_LABEL_KEY, MANAGED_LABEL_VALUE
from mlbatch.core.settings import Settings
from mlbatch.gcp.clients import Clients
from mlbatch.local.base_images import BuildBase
from mlbatch.local.infra import docker_client
from mlbatch.release import containers, gce_image, vmtest
from mlbatch.release.bake import BakeRequest, BakeSource
from mlbatch.release.targets.base import BakedImage
from mlbatch.ui import Say, say


class GcpTarget:
    name = "gcp"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.clients = Clients(settings)

    @property
    def credentials(self):
        return self.clients.credentials  # refreshed when the token expired (a bake may outlast it)

    def preflight(self) -> None:
        from mlbatch.iam import policy
        from mlbatch.release import preflight

        preflight.check(self.settings, self.clients, gcp_base.principal(self.credentials))
        # A manifest the runner could replace would choose the code and container of every later run.
        policy.check_bucket(self.settings, self.credentials, say)

    def push_containers(self, root: Path, version: str, say: Say, base_image: str = "") -> dict[str, Container]:
        import docker

        host = self.settings.registry.split("/")[0]
        login = {"username": gcp_base.REGISTRY_USER, "password": self.credentials.token}
        client = docker_client()
        say(f"logging in to {host} as {gcp_base.REGISTRY_USER} with a token for {gcp_base.principal(self.credentials)}")
        try:
            client.login(registry=host, reauth=True, **login)
        except docker.errors.APIError as exc:
            raise PermissionDenied(
                f"the registry {host} refused the token of {gcp_base.principal(self.credentials)}: {exc.explanation} "
                "(grant roles/artifactregistry.writer on the repository, and enable artifactregistry.googleapis.com)"
            ) from None
        return containers.build_and_push(client, root / "containers", self.settings.registry, version, say, login, base_image)

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

    def list_images(self) -> list[BakedImage]:
        return gce_image.baked_images(self.settings, f'labels.{MANAGED_LABEL_KEY}="{MANAGED_LABEL_VALUE}"')

    def retire_image(self, image: BakedImage, say: Say) -> None:
        images = gce_image.Images(self.settings, say, self.clients)
        if image.status != "DEPRECATED":
            images.deprecate(image.name)
            say(f"deprecated {image.name}")
        images.delete(image.name)
        say(f"deleted {image.name}")
