"""disks: an instance's boot disk, which outlives it when autoDelete is false (as Packer asks).

The disk of a running instance is its container's filesystem. When the instance is deleted,
a disk that is kept is committed to a Docker image: `images.insert` with that sourceDisk
turns it into a GCE image that later instances boot, so a bake yields a real artifact.
"""

from __future__ import annotations

import subprocess
from typing import Any

from tests.support.fake_compute.errors import ApiError, not_found
from tests.support.fake_compute.state import FakeInstance

_ZONE = "/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
DISK_REPOSITORY = "mlbatch-fakegce-disk"


class DisksMixin:
    ROUTES = [
        ("GET", _ZONE + r"/disks/(?P<disk>[^/]+)", "disks", "get"),
        ("DELETE", _ZONE + r"/disks/(?P<disk>[^/]+)", "disks", "delete"),
    ]

    def _disk_record(self, zone: str, name: str) -> dict[str, Any]:
        disk = self.disks.get((zone, name))
        if disk is None:
            raise not_found(f"projects/{self.project}/zones/{zone}/disks/{name}")
        return disk

    def _attach_boot_disk(self, instance: FakeInstance, image: dict[str, Any]) -> None:
        """instances.insert: the boot disk is created from the image, named after the instance unless told."""
        spec = instance.body.get("disks", [{}])[0]
        params = spec.get("initializeParams", {})
        name = params.get("diskName") or instance.name
        if (instance.zone, name) in self.disks:
            raise ApiError(409, f"The resource 'projects/{self.project}/zones/{instance.zone}/disks/{name}' already exists")
        self.disks[(instance.zone, name)] = {
            "kind": "compute#disk",
            "id": str(next(self._ids)),
            "name": name,
            "zone": self._zone_link(instance.zone),
            "selfLink": f"{self._zone_link(instance.zone)}/disks/{name}",
            "status": "READY",
            "sizeGb": str(params.get("diskSizeGb") or image.get("diskSizeGb", "10")),
            "sourceImage": image["selfLink"],
            "guestOsFeatures": image.get("guestOsFeatures", []),  # a disk from a UEFI image is one too
            "users": [instance.body["selfLink"]],
            "_instance": instance.name,
            "_auto_delete": bool(spec.get("autoDelete", False)),
            "_docker_ref": image["_docker_ref"],
        }

    def _instance_disks(self, instance: FakeInstance) -> list[dict[str, Any]]:
        return [d for (zone, _), d in self.disks.items() if zone == instance.zone and d["_instance"] == instance.name]

    def _save_disks(self, instance: FakeInstance) -> None:
        """The instance has stopped: a disk it leaves behind keeps its container's filesystem."""
        for disk in self._instance_disks(instance):
            if disk["_auto_delete"] or not instance.container:
                continue
            ref = f"{DISK_REPOSITORY}:{instance.zone}-{disk['name']}-{disk['id']}"
            subprocess.run(["docker", "commit", instance.container, ref], check=True, capture_output=True)
            with self._lock:
                self._owned_refs.add(ref)
                disk["_docker_ref"] = ref

    def _drop_disks(self, instance: FakeInstance) -> None:
        """The instance is gone: its disks are detached, and those with autoDelete go with it."""
        for disk in self._instance_disks(instance):
            disk["users"], disk["_instance"] = [], ""
            if disk["_auto_delete"]:
                self.disks.pop((instance.zone, disk["name"]), None)
        self._release_docker_refs()

    def _disks_get(self, project, zone, disk, params, body):
        return self._public_view(self._disk_record(zone, disk))

    def _disks_delete(self, project, zone, disk, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:
            return self.operations[self.by_request_id[request_id]]
        record = self._disk_record(zone, disk)
        if record["users"]:
            raise ApiError(
                400,
                f"The disk resource '{record['selfLink']}' is already being used by '{record['users'][0]}'",
                "resourceInUseByAnotherResource",
            )
        op = self._new_operation(zone, "delete", disk, request_id)
        op["targetLink"] = record["selfLink"]
        del self.disks[(zone, disk)]
        self._finish(op)
        self._release_docker_refs()
        return op

    def _release_docker_refs(self, everything: bool = False) -> None:
        """Remove the Docker images this fake made that no image or disk names any more."""
        used = {d["_docker_ref"] for d in self.disks.values()}
        used |= {i["_docker_ref"] for i in self.images.values()}
        for store in self.public_images.values():
            used |= {i["_docker_ref"] for i in store.values()}
        for ref in sorted(self._owned_refs if everything else self._owned_refs - used):
            subprocess.run(["docker", "rmi", ref], capture_output=True)
            self._owned_refs.discard(ref)
