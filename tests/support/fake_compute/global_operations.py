"""globalOperations: what image inserts and deletes return (images are global resources)."""

from __future__ import annotations

from typing import Any

from tests.support.fake_compute.errors import not_found

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"


class GlobalOperationsMixin:
    ROUTES = [
        ("GET", _GLOBAL + r"/operations/(?P<operation>[^/]+)", "globalOperations", "get"),
        ("POST", _GLOBAL + r"/operations/(?P<operation>[^/]+)/wait", "globalOperations", "wait"),
    ]

    def _new_global_operation(self, kind: str, target_link: str, request_id: str = "") -> dict[str, Any]:
        """An operation like a zonal one, without a zone, under global/operations."""
        op = self._new_operation("", kind, "", request_id)
        del op["zone"]
        op["targetLink"] = target_link
        op["selfLink"] = f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/operations/{op['name']}"
        return op

    def _global_op(self, project: str, operation: str) -> dict[str, Any]:
        op = self.operations.get(operation)
        if op is None or "zone" in op:
            raise not_found(f"projects/{project}/global/operations/{operation}")
        return op

    def _globalOperations_get(self, project, operation, params, body):
        return self._global_op(project, operation)

    def _globalOperations_wait(self, project, operation, params, body):
        self._global_op(project, operation)  # 404 for a zonal operation
        return self._zoneOperations_wait(project, "", operation, params, body)  # the same hold (and faults)
