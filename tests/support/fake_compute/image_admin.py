"""images.list / images.deprecate / images.delete and the global operations they return:
what retention (`invoke images`, `images.prune`) needs. The read routes of images live in
images.py.

list honours `filter` (the `field = value`, `field != value` comparisons the real API
takes, on name, family, status and labels.KEY) and pages with maxResults/pageToken;
deprecate records the DeprecationStatus; delete returns a RUNNING global operation that is
DONE when next asked, as a real delete takes a moment.
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support.fake_compute.errors import ApiError, not_found

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"
_TERM = re.compile(r'^\s*\(?\s*(?P<field>[a-zA-Z][\w.-]*)\s*(?P<op>=|!=|eq|ne)\s*(?P<value>"[^"]*"|[^\s)]+)\s*\)?\s*$')
DEPRECATION_STATES = ("ACTIVE", "DEPRECATED", "OBSOLETE", "DELETED")


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00")


class ImageAdminMixin:
    ROUTES = [
        ("GET", _GLOBAL + r"/images", "images", "list"),
        ("POST", _GLOBAL + r"/images/(?P<image>[^/]+)/deprecate", "images", "deprecate"),
        ("DELETE", _GLOBAL + r"/images/(?P<image>[^/]+)", "images", "delete"),
        ("GET", _GLOBAL + r"/operations/(?P<operation>[^/]+)", "globalOperations", "get"),
        ("POST", _GLOBAL + r"/operations/(?P<operation>[^/]+)/wait", "globalOperations", "wait"),
    ]

    # --- images -----------------------------------------------------------------------

    def _matches(self, image: dict[str, Any], filter_: str) -> bool:
        if not filter_.strip():
            return True
        terms = re.split(r"\s+AND\s+", filter_.strip()) if " AND " in filter_ else [filter_]
        for term in terms:
            m = _TERM.match(term)
            if not m:
                raise ApiError(400, f"Invalid value for field 'filter': '{filter_}'. Invalid list filter expression.")
            field, value = m["field"], m["value"].strip('"')
            if field.startswith("labels."):
                actual = image.get("labels", {}).get(field[len("labels.") :])
            elif field in ("name", "family", "status"):
                actual = image.get(field)
            else:
                raise ApiError(400, f"Invalid value for field 'filter': '{filter_}'. Unsupported field {field!r}.")
            if (actual == value) != (m["op"] in ("=", "eq")):
                return False
        return True

    def _images_list(self, project, params, body):
        max_results = int(params.get("maxResults", 500))
        if not 0 <= max_results <= 500:
            raise ApiError(400, f"Invalid value for field 'maxResults': {max_results}. Must be between 0 and 500.")
        names = sorted(n for n, i in self.images.items() if self._matches(i, params.get("filter", "")))
        token = params.get("pageToken", "")
        start = 0
        if token:
            if not token.startswith("page-") or not token[5:].isdigit():
                raise ApiError(400, f"Invalid value for field 'pageToken': '{token}'.")
            start = int(token[5:])
        page = names[start : start + max_results]
        reply: dict[str, Any] = {
            "kind": "compute#imageList",
            "id": f"projects/{project}/global/images",
            "items": [self._image(n) for n in page],
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{project}/global/images",
        }
        if start + max_results < len(names):
            reply["nextPageToken"] = f"page-{start + max_results}"
        return reply

    def _images_deprecate(self, project, image, params, body):
        if image not in self.images:
            raise not_found(f"projects/{project}/global/images/{image}")
        state = (body or {}).get("state", "ACTIVE")
        if state not in DEPRECATION_STATES:
            raise ApiError(400, f"Invalid value for field 'resource.state': '{state}'.")
        if state == "ACTIVE":
            self.images[image].pop("deprecated", None)
        else:
            self.images[image]["deprecated"] = {k: v for k, v in (body or {}).items()}
        op = self._global_operation("setDeprecation", image)
        op["status"], op["progress"], op["endTime"] = "DONE", 100, _stamp()
        return op

    def _images_delete(self, project, image, params, body):
        if image not in self.images:
            raise not_found(f"projects/{project}/global/images/{image}")
        del self.images[image]
        return self._global_operation("delete", image)  # RUNNING: DONE when next asked

    # --- global operations ------------------------------------------------------------

    def _global_operation(self, kind: str, image: str) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        link = f"https://www.googleapis.com/compute/v1/projects/{self.project}/global"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": kind,
            "status": "RUNNING",
            "progress": 0,
            "targetLink": f"{link}/images/{image}",
            "selfLink": f"{link}/operations/{name}",
            "insertTime": _stamp(),
        }
        self.operations[name] = op
        return dict(op)

    def _globalOperations_get(self, project, operation, params, body):
        op = self.operations.get(operation)
        if op is None or "zone" in op:
            raise not_found(f"projects/{project}/global/operations/{operation}")
        if op["status"] != "DONE":
            op["status"], op["progress"], op["endTime"] = "DONE", 100, _stamp()
        return op

    def _globalOperations_wait(self, project, operation, params, body):
        return self._globalOperations_get(project, operation, params, body)
