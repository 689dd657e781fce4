"""zones and machineTypes: what Packer looks up before it creates its build instance."""

from __future__ import annotations

import re

from tests.support.fake_compute.errors import not_found

_ZONE = "/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
_ZONE_NAME = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]")
# A few machine types of the real catalogue: (guest CPUs, memory in MB).
MACHINE_TYPES = {
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n1-standard-1": (1, 3840),
    "n1-standard-4": (4, 15360),
    "n2-standard-2": (2, 8192),
}


class ZonesMixin:
    ROUTES = [
        ("GET", _ZONE, "zones", "get"),
        ("GET", _ZONE + r"/machineTypes/(?P<machineType>[^/]+)", "machineTypes", "get"),
    ]

    def _check_zone(self, project: str, zone: str) -> None:
        if not _ZONE_NAME.fullmatch(zone):
            raise not_found(f"projects/{project}/zones/{zone}")

    def _zones_get(self, project, zone, params, body):
        self._check_zone(project, zone)
        region = zone.rsplit("-", 1)[0]
        base = f"https://www.googleapis.com/compute/v1/projects/{project}"
        return {
            "kind": "compute#zone",
            "id": str(abs(hash(zone)) % 10**10),
            "name": zone,
            "status": "UP",
            "region": f"{base}/regions/{region}",
            "selfLink": f"{base}/zones/{zone}",
        }

    def _machineTypes_get(self, project, zone, machineType, params, body):  # noqa: N803 (the API's parameter name)
        self._check_zone(project, zone)
        if machineType not in MACHINE_TYPES:
            raise not_found(f"projects/{project}/zones/{zone}/machineTypes/{machineType}")
        cpus, memory = MACHINE_TYPES[machineType]
        return {
            "kind": "compute#machineType",
            "name": machineType,
            "zone": zone,
            "guestCpus": cpus,
            "memoryMb": memory,
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/machineTypes/{machineType}",
        }
