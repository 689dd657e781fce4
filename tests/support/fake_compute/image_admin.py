"""What retention (`invoke images`, `images.prune`) needs beyond images.py: images.deprecate,
and pages for images.list (maxResults / pageToken / nextPageToken, as the real API pages).

images.list's filter, images.delete and the global operations live in images.py and
global_operations.py; this mixin sits before ImagesMixin and pages what its list returns.
"""

from __future__ import annotations

from typing import Any

from tests.support.fake_compute.errors import ApiError

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"
DEPRECATION_STATES = ("ACTIVE", "DEPRECATED", "OBSOLETE", "DELETED")
MAX_PAGE = 500  # the real API's maximum (and default) maxResults


class ImageAdminMixin:
    ROUTES = [
        ("POST", _GLOBAL + r"/images/(?P<image>[^/]+)/deprecate", "images", "deprecate"),
    ]

    def _images_list(self, project, params, body):
        reply: dict[str, Any] = super()._images_list(project, params, body)
        size = int(params.get("maxResults", MAX_PAGE))
        if not 0 <= size <= MAX_PAGE:
            raise ApiError(400, f"Invalid value for field 'maxResults': {size}. Must be between 0 and {MAX_PAGE}.")
        token = params.get("pageToken", "")
        if token and not (token.startswith("page-") and token[5:].isdigit()):
            raise ApiError(400, f"Invalid value for field 'pageToken': '{token}'.")
        start = int(token[5:]) if token else 0
        items = sorted(reply.get("items", []), key=lambda i: i["name"])  # a stable order across pages
        reply["items"] = items[start : start + size]
        if start + size < len(items):
            reply["nextPageToken"] = f"page-{start + size}"
        return reply

    def _images_deprecate(self, project, image, params, body):
        record = self._image_record(project, image)
        state = (body or {}).get("state", "ACTIVE")
        if state not in DEPRECATION_STATES:
            raise ApiError(400, f"Invalid value for field 'resource.state': '{state}'.")
        if state == "ACTIVE":
            record.pop("deprecated", None)
        else:
            record["deprecated"] = dict(body)
        op = self._new_global_operation("setDeprecation", record["selfLink"], params.get("requestId", ""))
        self._finish(op)
        return op
