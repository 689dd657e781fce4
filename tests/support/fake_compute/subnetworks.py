"""subnetworks.get: what a run's preflight reads (Private Google Access), and the two
testIamPermissions calls it makes: Cloud Resource Manager's on a project and IAM's on the
runner service account. Served by the same fake (the test profile points every Google API at
it); those two are not Compute methods, so they are checked here, not against compute.v1.

Shared VPC (https://cloud.google.com/vpc/docs/shared-vpc): a subnetwork may live in a host
project other than the instances' own; `add_subnetwork(..., project=HOST)` makes one there, and
an instance naming a subnetwork that does not exist where it says is refused (check_interfaces).
Grants are per project: `denied_permissions` everywhere, `denied_on[project]` on one project.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.fake_compute.errors import ApiError, by_reason, not_found

_REGION = "/compute/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)"
# A subnetwork as instances.insert takes it: a full URL or a partial one from "projects/".
_SUBNET_LINK = re.compile(r"(?:.*/compute/v1/)?projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)/subnetworks/(?P<name>[^/]+)")


class SubnetworksMixin:
    ROUTES = [
        ("GET", _REGION + r"/subnetworks/(?P<subnetwork>[^/]+)", "subnetworks", "get"),
        ("POST", r"/v1/projects/(?P<project>[^/:]+):testIamPermissions", "iam:projects", "testIamPermissions"),
        (
            "POST",
            r"/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/:]+):testIamPermissions",
            "iam:serviceAccounts",
            "testIamPermissions",
        ),
    ]

    def add_subnetwork(
        self, region: str, name: str, private_google_access: bool, project: str = "", network: str = "default"
    ) -> str:
        """A subnetwork of `network`, in this project or in a Shared VPC host `project`; its self link."""
        project = project or self.project
        base = f"https://www.googleapis.com/compute/v1/projects/{project}"
        link = f"{base}/regions/{region}/subnetworks/{name}"
        self.subnetworks[(project, region, name)] = {
            "kind": "compute#subnetwork",
            "id": str(next(self._ids)),
            "name": name,
            "network": f"{base}/global/networks/{network}",
            "ipCidrRange": "10.164.0.0/20",
            "region": f"{base}/regions/{region}",
            "privateIpGoogleAccess": private_google_access,
            "selfLink": link,
        }
        return link

    def host_projects(self) -> set[str]:
        """Projects other than ours whose subnetworks the fake serves (Shared VPC hosts)."""
        return {project for project, _, _ in self.subnetworks} - {self.project}

    def check_interfaces(self, body: dict) -> None:
        """instances.insert: a named subnetwork must exist (in the project its URL names) and belong to
        the named network, as the real API refuses otherwise."""
        for i, interface in enumerate(body.get("networkInterfaces") or []):
            subnetwork = interface.get("subnetwork")
            if not subnetwork:
                continue
            match = _SUBNET_LINK.fullmatch(subnetwork)
            found = self.subnetworks.get((match["project"], match["region"], match["name"])) if match else None
            if found is None:
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.networkInterfaces[{i}].subnetwork': '{subnetwork}'. "
                    "The referenced subnetwork resource cannot be found.",
                )
            network = interface.get("network")
            if network and self._resource_path(network) != self._resource_path(found["network"]):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.networkInterfaces[{i}].network': '{network}'. "
                    f"The subnetwork '{subnetwork}' is not in this network.",
                )

    def _resource_path(self, link: str) -> str:
        """projects/P/... of a full or partial URL (a partial one may leave out projects/P: ours)."""
        path = link.split("/compute/v1/", 1)[-1]
        return path if path.startswith("projects/") else f"projects/{self.project}/{path}"

    def ready_for_runs(self, region: str, network: str, service_account: str) -> None:
        """What the run preflight asks of a project: a subnet with Private Google Access, the runner account."""
        self.add_subnetwork(region, network, private_google_access=True)
        self.service_accounts.add(service_account)

    def _subnetworks_get(self, project, region, subnetwork, params, body):
        path = f"projects/{project}/regions/{region}/subnetworks/{subnetwork}"
        if "compute.subnetworks.get" in self.denied_on.get(project, set()) | self.denied_permissions:
            raise by_reason("forbidden", method="subnetworks.get", target=path)
        found = self.subnetworks.get((project, region, subnetwork))
        if found is None:
            raise not_found(f"projects/{project}/regions/{region}/subnetworks/{subnetwork}")
        return found

    def _granted(self, body: Any, project: str) -> dict[str, Any]:
        asked = (body or {}).get("permissions")
        if not isinstance(asked, list) or not all(isinstance(p, str) and "." in p for p in asked):
            raise ApiError(400, "Invalid JSON payload: 'permissions' must be a list of permission names")
        denied = self.denied_permissions | self.denied_on.get(project, set())
        held = [p for p in asked if p not in denied]
        return {"permissions": held} if held else {}  # the real API omits the field when none is held

    def _iam_projects_testIamPermissions(self, project, params, body):
        return self._granted(body, project)

    def _iam_serviceAccounts_testIamPermissions(self, project, account, params, body):
        if account not in self.service_accounts:
            raise ApiError(404, f"Unknown service account {account}", "notFound")
        return self._granted(body, project)
