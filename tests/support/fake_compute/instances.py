"""instances: the REST methods (insert, get, list, delete, getSerialPortOutput)."""

from __future__ import annotations

import threading
from typing import Any

from mlbatch.core.names import LABEL_KEY, LABEL_VALUE
from tests.support.fake_compute.errors import ApiError, by_reason, not_found
from tests.support.fake_compute.listing import listed
from tests.support.fake_compute.rules import check_instance_rules
from tests.support.fake_compute.state import FakeInstance

_ZONE = "/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"


class InstancesMixin:
    ROUTES = [
        ("POST", _ZONE + r"/instances", "instances", "insert"),
        ("GET", _ZONE + r"/instances", "instances", "list"),
        ("GET", _ZONE + r"/instances/(?P<instance>[^/]+)", "instances", "get"),
        ("DELETE", _ZONE + r"/instances/(?P<instance>[^/]+)", "instances", "delete"),
        ("GET", _ZONE + r"/instances/(?P<instance>[^/]+)/serialPort", "instances", "getSerialPortOutput"),
    ]

    def find(self, name: str) -> FakeInstance | None:
        with self._lock:
            return next((i for (_, n), i in self.instances.items() if n == name), None)

    def insert_bodies(self) -> list[dict[str, Any]]:
        return [b for m, p, b in self.requests if m == "POST" and p.endswith("/instances") and b]

    def _instances_insert(self, project, zone, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:  # the real API deduplicates retried inserts by requestId
            return self.operations[self.by_request_id[request_id]]
        name = body["name"]
        if (zone, name) in self.instances:
            raise ApiError(
                409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists", "alreadyExists"
            )
        for key, value in (body.get("labels") or {}).items():
            if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.labels': '{key}={value}'. "
                    "Label keys and values must be lowercase [a-z0-9_-], at most 63 characters",
                )
        if sum(len(i.get("value", "")) for i in body.get("metadata", {}).get("items", [])) > 512 * 1024:
            raise ApiError(400, "Metadata exceeds the 512 KB limit")
        source = body.get("disks", [{}])[0].get("initializeParams", {}).get("sourceImage", "")
        image = self._source_image(source)  # 404 for an image (or family) that does not exist
        check_instance_rules(body, image)
        self.check_accelerators(zone, body)
        self.check_interfaces(body)
        op = self._new_operation(zone, "insert", name, request_id)
        if zone in self.faults.stockout_zones:
            self._finish(
                op,
                (
                    "ZONE_RESOURCE_POOL_EXHAUSTED",
                    f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
                    "to fulfill the request. Try a different zone, or try again later.",
                ),
            )
            return op
        if zone in self.faults.unsupported_zones:
            machine = body.get("machineType", "").rsplit("/", 1)[-1]
            self._finish(
                op,
                ("UNSUPPORTED_OPERATION", f"The selected machine type ({machine}) is not supported in zone {zone}."),
            )
            return op
        if self.faults.quota_exceeded:
            self._finish(op, ("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded. Limit: 8.0 in region europe-west4."))
            return op
        if gpu_quota := self.gpu_quota_problem(zone, body):
            self._finish(op, ("QUOTA_EXCEEDED", gpu_quota))
            return op
        instance = FakeInstance(
            zone=zone,
            body={
                **body,
                "id": str(next(self._ids)),
                "kind": "compute#instance",
                "zone": self._zone_link(zone),
                "selfLink": f"{self._zone_link(zone)}/instances/{name}",
            },
            created=self.now(),
        )
        self._attach_boot_disk(instance, image)
        self.instances[(zone, name)] = instance
        self.inserts_performed += 1
        threading.Thread(target=self._boot, args=(instance, image["_docker_ref"], op), daemon=True).start()
        return op

    def _get_instance(self, zone: str, name: str) -> FakeInstance:
        instance = self.instances.get((zone, name))
        if instance is None:
            raise not_found(f"projects/{self.project}/zones/{zone}/instances/{name}")
        return instance

    def _view(self, instance: FakeInstance) -> dict[str, Any]:
        return {**instance.body, "status": instance.status}

    def _instances_get(self, project, zone, instance, params, body):
        return self._view(self._get_instance(zone, instance))

    def _instances_list(self, project, zone, params, body):
        items = [self._view(i) for (z, _), i in sorted(self.instances.items()) if z == zone]
        return listed("compute#instanceList", items, params, self.faults.page_size)

    def _instances_delete(self, project, zone, instance, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:
            return self.operations[self.by_request_id[request_id]]
        target = self._get_instance(zone, instance)
        if target.deleting:
            # Another delete is under way (the agent's own, or the controller's): the real API
            # refuses a second one as not ready, or accepts it and its operation ends in 404.
            if not self.faults.delete_race_in_operation:
                raise by_reason("resourceNotReady", target=f"projects/{project}/zones/{zone}/instances/{instance}")
            op = self._new_operation(zone, "delete", instance, request_id)
            threading.Thread(target=self._lose_race, args=(target, op), daemon=True).start()
            return op
        target.deleting = True
        target.status = "STOPPING"
        op = self._new_operation(zone, "delete", instance, request_id)
        threading.Thread(target=self._delete_later, args=(target, op), daemon=True).start()
        return op

    def _instances_getSerialPortOutput(self, project, zone, instance, params, body):
        target = self._get_instance(zone, instance)
        start = int(params.get("start", 0))
        # Like the real API: a start older than the buffer returns from the oldest byte kept.
        start = max(start, target.serial_dropped)
        data = bytes(target.serial[start - target.serial_dropped :])
        return {
            "kind": "compute#serialPortOutput",
            "contents": data.decode(errors="replace"),
            "start": str(start),
            "next": str(start + len(data)),
            "selfLink": target.body["selfLink"],
        }
