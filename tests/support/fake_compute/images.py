"""images: what instances boot from, each backed by a local Docker image.

Like the real API: images live in a project (ours, or a public one such as debian-cloud);
`insert` copies another image (sourceImage) or captures a disk (sourceDisk) through a
global operation, the new image is PENDING until that operation is DONE (`fake.latencies`:
a minute or more by default, as on GCE), a deleted one DELETING until its operation is, names are unique,
labels are checked, and a family resolves to its newest READY, non-deprecated image.
Lists are paged and strictly filtered (listing.py): a filter the fake cannot parse is a 400.
"""

from __future__ import annotations

import re
import time
from typing import Any

from mlbatch.core.names import LABEL_KEY, LABEL_VALUE, managed_labels
from tests.support.fake_compute.errors import ApiError, not_found
from tests.support.fake_compute.listing import listed

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"
_IMAGE_LINK = re.compile(r"(?:.*/)?projects/(?P<project>[^/]+)/global/images/(?P<image>(?:family/)?[^/]+)")
_DISK_LINK = re.compile(r"(?:.*/)?projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/disks/(?P<disk>[^/]+)")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00")


class ImagesMixin:
    ROUTES = [
        ("GET", _GLOBAL + r"/images/family/(?P<family>[^/]+)", "images", "getFromFamily"),
        ("GET", _GLOBAL + r"/images/(?P<image>[^/]+)", "images", "get"),
        ("GET", _GLOBAL + r"/images", "images", "list"),
        ("POST", _GLOBAL + r"/images", "images", "insert"),
        ("DELETE", _GLOBAL + r"/images/(?P<image>[^/]+)", "images", "delete"),
    ]

    def _image_link(self, project: str, name: str) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{project}/global/images/{name}"

    def _image_store(self, project: str) -> dict[str, dict[str, Any]]:
        if project == self.project:
            return self.images
        return self.public_images.setdefault(project, {})

    def add_image(
        self, name: str, docker_ref: str, family: str = "mlbatch", project: str = "", labels=None, uefi: bool = True
    ) -> str:
        """Register an image backed by `docker_ref` (a guest image boots as a VM: guest.py)."""
        project = project or self.project
        link = self._image_link(project, name)
        self._image_store(project)[name] = {
            "kind": "compute#image",
            "name": name,
            "family": family,
            "selfLink": link,
            "status": "READY",
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "labels": managed_labels() if labels is None else dict(labels),
            "diskSizeGb": "10",
            "sourceType": "RAW",
            # Baked from a UEFI image, the image is one too: Secure Boot needs it (rules.py).
            "guestOsFeatures": [{"type": "UEFI_COMPATIBLE"}] if uefi else [],
            "_docker_ref": docker_ref,
        }
        return link

    def _image_record(self, project: str, name: str) -> dict[str, Any]:
        record = self._image_store(project).get(name)
        if record is None:
            raise not_found(f"projects/{project}/global/images/{name}")
        return record

    def _source_image(self, link: str) -> dict[str, Any]:
        """The image a sourceImage value names: a full or partial URL, or `global/images/NAME`."""
        match = _IMAGE_LINK.fullmatch(link) or re.fullmatch(r"(?:global/images/)?(?P<image>[a-z][-a-z0-9]*)", link)
        if not match:
            raise ApiError(400, f"Invalid value for field 'sourceImage': '{link}'. The URL is malformed.")
        project = match.groupdict().get("project") or self.project
        family = re.fullmatch(r"family/(?P<f>.+)", match["image"])
        if family:
            return self._image_record(project, self._images_getFromFamily(project, family["f"], {}, None)["name"])
        return self._image_record(project, match["image"])

    def _image(self, name: str) -> dict[str, Any]:
        return self._public_view(self._image_record(self.project, name))

    @staticmethod
    def _public_view(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if not k.startswith("_")}

    def _images_get(self, project, image, params, body):
        return self._public_view(self._image_record(project, image))

    def _images_getFromFamily(self, project, family, params, body):
        live = [
            i
            for i in self._image_store(project).values()
            if i["family"] == family and i["status"] == "READY" and i.get("deprecated", {}).get("state", "ACTIVE") == "ACTIVE"
        ]
        if not live:
            raise not_found(f"projects/{project}/global/images/family/{family}")
        return self._public_view(max(live, key=lambda i: (i["creationTimestamp"], int(i["id"]))))

    def _images_list(self, project, params, body):
        items = [self._public_view(i) for i in self._image_store(project).values()]
        return {"id": f"projects/{project}/global/images", **listed("compute#imageList", items, params, self.faults.page_size)}

    def _images_insert(self, project, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:  # a retried insert is the same operation
            return self.operations[self.by_request_id[request_id]]
        name = body["name"]
        if name in self.images:
            raise ApiError(409, f"The resource 'projects/{project}/global/images/{name}' already exists", "alreadyExists")
        for key, value in (body.get("labels") or {}).items():
            if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                raise ApiError(400, f"Invalid value for field 'resource.labels': '{key}={value}'.")
        sources = [k for k in ("sourceImage", "sourceDisk", "rawDisk", "sourceSnapshot") if body.get(k)]
        if len(sources) != 1:
            raise ApiError(400, "Exactly one of sourceImage, sourceDisk, rawDisk or sourceSnapshot must be specified.")
        if sources[0] == "sourceImage":
            source = self._source_image(body["sourceImage"])
            capture = None
        elif sources[0] == "sourceDisk":
            match = _DISK_LINK.fullmatch(body["sourceDisk"])
            if not match or match["project"] != project:
                # As the real API answers the URL Debian's Packer 1.6.6 build sends (no "projects/").
                raise ApiError(
                    400, f"Invalid value for field 'resource.sourceDisk': '{body['sourceDisk']}'. The URL is malformed."
                )
            disk = self._disk_record(match["zone"], match["disk"])
            if disk["users"]:  # the real API refuses a disk in use unless forceCreate
                raise ApiError(
                    400,
                    f"The disk resource '{disk['selfLink']}' is already being used by '{disk['users'][0]}'",
                    "resourceInUseByAnotherResource",
                )
            source, capture = {"_docker_ref": disk["_docker_ref"], "guestOsFeatures": disk.get("guestOsFeatures", [])}, disk
        else:
            raise ApiError(400, f"{sources[0]} is not supported by this fake")
        record = {
            **{k: v for k, v in body.items() if k not in ("sourceImage", "sourceDisk")},
            "kind": "compute#image",
            "selfLink": self._image_link(project, name),
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "status": "PENDING",
            "family": body.get("family", ""),
            "labels": dict(body.get("labels") or {}),
            "diskSizeGb": "10",
            "guestOsFeatures": body.get("guestOsFeatures") or source.get("guestOsFeatures", []),
            "_docker_ref": source["_docker_ref"],
        }
        if capture is not None:
            record["sourceDisk"] = capture["selfLink"]
        else:
            record["sourceImage"] = self._image_link(project, body["sourceImage"].rstrip("/").split("/")[-1])
        self.images[name] = record
        op = self._new_global_operation("insert", record["selfLink"], request_id)
        self._finish_after(op, self.latencies.image_insert, lambda: record.update(status="READY"))
        return op

    def _images_delete(self, project, image, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:
            return self.operations[self.by_request_id[request_id]]
        record = self._image_record(project, image)
        op = self._new_global_operation("delete", record["selfLink"], request_id)
        record["status"] = "DELETING"

        def gone() -> None:
            if self.images.get(image) is record:
                del self.images[image]
                self._release_docker_refs()

        self._finish_after(op, self.latencies.image_delete, gone)
        return op
