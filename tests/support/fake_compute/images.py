"""images: the baked images a run boots from (each backed by a local Docker image)."""

from __future__ import annotations

import time
from typing import Any

from mlbatch.core.names import managed_labels
from tests.support.fake_compute.errors import not_found


class ImagesMixin:
    ROUTES = [
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/global/images/family/(?P<family>[^/]+)", "images", "getFromFamily"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/global/images/(?P<image>[^/]+)", "images", "get"),
    ]

    def add_image(self, name: str, docker_ref: str, family: str = "mlbatch", uefi: bool = True) -> str:
        link = f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/images/{name}"
        self.images[name] = {
            "kind": "compute#image",
            "name": name,
            "family": family,
            "selfLink": link,
            "status": "READY",
            "id": str(next(self._ids)),
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00"),
            "labels": managed_labels(),
            # Baked from a UEFI image, the image is one too: Secure Boot needs it (rules.py).
            "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}] if uefi else [],
            "_docker_ref": docker_ref,
        }
        return link

    def _image(self, name: str) -> dict[str, Any]:
        if name not in self.images:
            raise not_found(f"projects/{self.project}/global/images/{name}")
        return {k: v for k, v in self.images[name].items() if not k.startswith("_")}

    def _images_get(self, project, image, params, body):
        return self._image(image)

    def _images_getFromFamily(self, project, family, params, body):
        named = sorted((i for i in self.images.values() if i["family"] == family), key=lambda i: i["creationTimestamp"])
        if not named:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return self._image(named[-1]["name"])
