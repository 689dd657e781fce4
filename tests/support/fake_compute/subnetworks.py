"""subnetworks.get: what a run's preflight reads (Private Google Access), and the two
testIamPermissions calls it makes: Cloud Resource Manager's on the project and IAM's on the
runner service account. Served by the same fake (the test profile points every Google API at
it); those two are not Compute methods, so they are checked here, not against compute.v1."""

from __future__ import annotations

from typing import Any

from tests.support.fake_compute.errors import ApiError, not_found

_REGION = "/compute/v1/projects/(?P<project>[^/]+)/regions/(?P<region>[^/]+)"


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

    def add_subnetwork(self, region: str, name: str, private_google_access: bool) -> None:
        link = f"https://www.googleapis.com/compute/v1/projects/{self.project}/regions/{region}/subnetworks/{name}"
        self.subnetworks[(region, name)] = {
            "kind": "compute#subnetwork",
            "id": str(next(self._ids)),
            "name": name,
            "network": f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/networks/default",
            "ipCidrRange": "10.164.0.0/20",
            "region": f"https://www.googleapis.com/compute/v1/projects/{self.project}/regions/{region}",
            "privateIpGoogleAccess": private_google_access,
            "selfLink": link,
        }

    def ready_for_runs(self, region: str, network: str, service_account: str) -> None:
        """What the run preflight asks of a project: a subnet with Private Google Access, the runner account."""
        self.add_subnetwork(region, network, private_google_access=True)
        self.service_accounts.add(service_account)

    def _subnetworks_get(self, project, region, subnetwork, params, body):
        found = self.subnetworks.get((region, subnetwork))
        if found is None:
            raise not_found(f"projects/{project}/regions/{region}/subnetworks/{subnetwork}")
        return found

    def _granted(self, body: Any) -> dict[str, Any]:
        asked = (body or {}).get("permissions")
        if not isinstance(asked, list) or not all(isinstance(p, str) and "." in p for p in asked):
            raise ApiError(400, "Invalid JSON payload: 'permissions' must be a list of permission names")
        held = [p for p in asked if p not in self.denied_permissions]
        return {"permissions": held} if held else {}  # the real API omits the field when none is held

    def _iam_projects_testIamPermissions(self, project, params, body):
        return self._granted(body)

    def _iam_serviceAccounts_testIamPermissions(self, project, account, params, body):
        if account not in self.service_accounts:
            raise ApiError(404, f"Unknown service account {account}", "notFound")
        return self._granted(body)
