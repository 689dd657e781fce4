"""What retention (`invoke images`, `images.prune`) needs beyond images.py: images.deprecate,
whose new state shows once its operation is DONE (`fake.latencies.image_deprecate`).

images.list (its filter and pages, through listing.py), images.delete and the global
operations live in images.py and global_operations.py.
"""

from __future__ import annotations

from tests.support.fake_compute.errors import ApiError

_GLOBAL = "/compute/v1/projects/(?P<project>[^/]+)/global"
DEPRECATION_STATES = ("ACTIVE", "DEPRECATED", "OBSOLETE", "DELETED")


class ImageAdminMixin:
    ROUTES = [
        ("POST", _GLOBAL + r"/images/(?P<image>[^/]+)/deprecate", "images", "deprecate"),
    ]

    def _images_deprecate(self, project, image, params, body):
        record = self._image_record(project, image)
        state = (body or {}).get("state", "ACTIVE")
        if state not in DEPRECATION_STATES:
            raise ApiError(400, f"Invalid value for field 'resource.state': '{state}'.")
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:
            return self.operations[self.by_request_id[request_id]]

        def apply() -> None:
            if state == "ACTIVE":
                record.pop("deprecated", None)
            else:
                record["deprecated"] = dict(body)

        op = self._new_global_operation("setDeprecation", record["selfLink"], request_id)
        self._finish_after(op, self.latencies.image_deprecate, apply)
        return op
