"""globalOperations: what image inserts and deletes return (images are global resources)."""

from __future__ import annotations

import time
from typing import Any

from tests.support.fake_compute.errors import not_found

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"


class GlobalOperationsMixin:
    ROUTES = [
        ("GET", _GLOBAL + r"/operations/(?P<operation>[^/]+)", "globalOperations", "get"),
        ("POST", _GLOBAL + r"/operations/(?P<operation>[^/]+)/wait", "globalOperations", "wait"),
    ]

    def _new_global_operation(self, kind: str, target_link: str, request_id: str = "") -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": kind,
            "status": "RUNNING",
            "progress": 0,
            "targetLink": target_link,
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/operations/{name}",
            "insertTime": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00"),
        }
        self.operations[name] = op
        if request_id:
            self.by_request_id[request_id] = name
        return op

    def _global_op(self, project: str, operation: str) -> dict[str, Any]:
        op = self.operations.get(operation)
        if op is None or "zone" in op:
            raise not_found(f"projects/{project}/global/operations/{operation}")
        return op

    def _globalOperations_get(self, project, operation, params, body):
        return self._global_op(project, operation)

    def _globalOperations_wait(self, project, operation, params, body):
        op = self._global_op(project, operation)
        deadline = time.monotonic() + 2  # the real one waits up to 2 minutes, and may return before DONE
        while op["status"] != "DONE" and time.monotonic() < deadline:
            self._lock.release()
            try:
                time.sleep(0.05)
            finally:
                self._lock.acquire()
        return op
