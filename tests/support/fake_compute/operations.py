"""zoneOperations: every mutation returns an operation that reaches DONE, maybe with errors."""

from __future__ import annotations

import time
from typing import Any

from tests.support.fake_compute.errors import not_found
from tests.support.fake_compute.listing import listed

# The HTTP status an operation's error carries, by error code (as the real API sets them).
_HTTP_STATUS_OF = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": 503,
    "QUOTA_EXCEEDED": 403,
    "RESOURCE_NOT_FOUND": 404,
    "UNSUPPORTED_OPERATION": 400,
}
_ZONE = "/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"


class OperationsMixin:
    ROUTES = [
        ("GET", _ZONE + r"/operations/(?P<operation>[^/]+)", "zoneOperations", "get"),
        ("POST", _ZONE + r"/operations/(?P<operation>[^/]+)/wait", "zoneOperations", "wait"),
        ("GET", _ZONE + r"/operations", "zoneOperations", "list"),
    ]

    def _new_operation(self, zone: str, kind: str, target: str, request_id: str = "") -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": kind,
            "zone": self._zone_link(zone),
            "status": "RUNNING",
            "progress": 0,
            "targetLink": f"{self._zone_link(zone)}/instances/{target}",
            "selfLink": f"{self._zone_link(zone)}/operations/{name}",
            "insertTime": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00"),
        }
        self.operations[name] = op
        if request_id:
            self.by_request_id[request_id] = name
        return op

    def _finish(self, op: dict[str, Any], error: tuple[str, str] | None = None) -> None:
        with self._lock:
            op["status"], op["progress"] = "DONE", 100
            op["endTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00")
            if error:
                op["error"] = {"errors": [{"code": error[0], "message": error[1]}]}
                op["httpErrorStatusCode"] = _HTTP_STATUS_OF.get(error[0], 400)

    def _zone_link(self, zone: str) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{zone}"

    def _zoneOperations_get(self, project, zone, operation, params, body):
        op = self.operations.get(operation)
        if op is None:
            raise not_found(f"projects/{project}/zones/{zone}/operations/{operation}")
        return op

    def _zoneOperations_wait(self, project, zone, operation, params, body):
        op = self._zoneOperations_get(project, zone, operation, params, body)
        if self.faults.early_waits > 0:
            self.faults.early_waits -= 1
            return op  # the real wait may return before DONE, too
        deadline = time.monotonic() + self.faults.wait_hold  # the real one holds up to ~2 minutes
        while op["status"] != "DONE" and time.monotonic() < deadline:
            self._lock.release()
            try:
                time.sleep(0.05)
            finally:
                self._lock.acquire()
            self._finish_due()  # an image operation due by now answers now, not at the reaper's next look
        return op

    def _zoneOperations_list(self, project, zone, params, body):
        items = [op for op in self.operations.values() if op.get("zone", "").endswith(f"/zones/{zone}")]
        return listed("compute#operationList", items, params, self.faults.page_size)
