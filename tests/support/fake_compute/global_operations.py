"""globalOperations: what image inserts, deprecations and deletes return (images are global
resources), and operations that take time on the fake's clock.

As the real API documents it (https://cloud.google.com/compute/docs/reference/rest/v1/globalOperations/wait):
`wait` "waits for no more than the default deadline (2 minutes) and then returns the current
state of the operation, which might be DONE or still in progress"; it may also return early,
"after zero seconds". The fake holds a wait up to `faults.wait_hold` (real seconds, 120 by
default) and answers as soon as the operation is DONE. Image operations finish after
`fake.latencies` seconds of the fake's clock (realistic by default; `fake.advance` skips ahead).
"""

from __future__ import annotations

from collections.abc import Callable
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

    def _finish_after(self, op: dict[str, Any], seconds: float, effect: Callable[[], None]) -> None:
        """`effect` happens and `op` is DONE once `seconds` of the fake's clock have passed (the reaper
        and fake.advance look); until then the operation is RUNNING and the resource shows it."""
        with self._lock:
            self._due.append((self.now() + seconds, op, effect))
        self._finish_due()

    def _finish_due(self) -> None:
        with self._lock:
            now = self.now()
            due = [entry for entry in self._due if entry[0] <= now]
            self._due = [entry for entry in self._due if entry[0] > now]
            for _, op, effect in due:
                effect()
                self._finish(op)

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
