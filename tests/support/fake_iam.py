"""Fakes of what the release preflight asks, on one loopback port: Cloud Resource Manager v3
`projects.testIamPermissions`, Service Usage v1 `services.batchGet`, and the testIamPermissions
of the two resources below the project the release identity is granted on (mlbatch.iam.plan):
Artifact Registry v1 `projects.locations.repositories.testIamPermissions` and IAM v1
`projects.serviceAccounts.testIamPermissions`
(https://cloud.google.com/artifact-registry/docs/reference/rest/v1/projects.locations.repositories/testIamPermissions,
https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/testIamPermissions).

Strict like the real ones: a request must carry credentials the fake token endpoint vouches
for (an access token it issued, or the service account's self-signed JWT; else 401
UNAUTHENTICATED), and its path, query parameters and body are checked
against the discovery documents shipped in google-api-python-client. testIamPermissions
answers the granted subset and refuses malformed or wildcard permissions; batchGet refuses
more than 30 names or names outside the parent.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.support import discovery
from tests.support.loopback import JsonServer

SYSTEM_PARAMS = {"$alt", "alt", "prettyPrint", "fields", "key", "quotaUser"}
_PERMISSION = re.compile(r"^[a-z][a-zA-Z0-9]*\.[a-zA-Z0-9]+\.[a-zA-Z0-9]+$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": _STATUS.get(self.code, "UNKNOWN")}}


def _check_request(doc: str, resource: str, method: str, query: dict[str, list[str]], body: Any) -> None:
    """`resource` is the discovery document's resource path, dotted for nested ones (projects.serviceAccounts)."""
    node: Any = discovery.document(doc)
    for part in resource.split("."):
        node = node["resources"][part]
    spec = node["methods"][method]
    for key in query:
        if key in SYSTEM_PARAMS:
            continue
        p = spec["parameters"].get(key)
        if p is None or p.get("location") != "query":
            raise ApiError(400, f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter.')
        if len(query[key]) > 1 and not p.get("repeated"):
            raise ApiError(400, f"Invalid value for {key}: not repeated")
    if "request" in spec:
        schema = discovery.document(doc)["schemas"][spec["request"]["$ref"]]
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received: expected an object")
        for key, value in body.items():
            prop = schema["properties"].get(key)
            if prop is None:
                raise ApiError(400, f'Invalid JSON payload received. Unknown name "{key}"')
            if prop.get("type") == "array" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ApiError(400, f"Invalid value at '{key}': expected a list of strings")


class FakeIam:
    """`granted`: permissions the caller holds on `project`; `enabled`: services on in it;
    `granted_on`: what it holds on other projects it may see (a Shared VPC host project, keyed
    by project id) and on resources below a project (keyed by resource name, e.g.
    `projects/P/locations/L/repositories/R`, `projects/P/serviceAccounts/EMAIL`). A resource
    not named there holds what `granted` says."""

    def __init__(
        self,
        project: str,
        authorizes: Callable[[str], bool],
        granted: set[str],
        enabled: set[str],
        project_number: str = "123456789012",
        granted_on: dict[str, set[str]] | None = None,
    ):
        self.project, self.authorizes, self.project_number = project, authorizes, project_number
        self.granted, self.enabled = set(granted), set(enabled)
        self.granted_on = {k: set(v) for k, v in (granted_on or {}).items()}
        self.requests: list[tuple[str, str]] = []
        self._http = JsonServer(self._respond)
        self.endpoint = self._http.url

    def start(self) -> FakeIam:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    # --- the two methods -----------------------------------------------------------------

    def _project_of(self, resource: str) -> None:
        if resource not in (f"projects/{self.project}", f"projects/{self.project_number}"):
            # The real API does not tell "absent" from "not yours".
            raise ApiError(403, f"The caller does not have permission on resource {resource}")

    def test_iam_permissions(self, resource: str, query: dict[str, list[str]], body: Any) -> dict[str, Any]:
        _check_request("cloudresourcemanager.v3", "projects", "testIamPermissions", query, body)
        other = resource.removeprefix("projects/")
        if other in self.granted_on:  # a project of its own, with its own grants
            return self._held(body.get("permissions", []), self.granted_on[other])
        self._project_of(resource)
        return self._held(body.get("permissions", []), self.granted)

    def _below_project(self, resource: str, body: Any) -> dict[str, Any]:
        """A repository's or a service account's testIamPermissions: what is granted on it."""
        project = resource.split("/")[1]
        if project not in (self.project, self.project_number, "-"):
            raise ApiError(403, f"The caller does not have permission on resource {resource}")
        return self._held(body.get("permissions", []), self.granted_on.get(resource, self.granted))

    def _held(self, asked: list[str], granted: set[str]) -> dict[str, Any]:
        for permission in asked:
            if "*" in permission:
                raise ApiError(400, f"Permissions ({permission}) with wildcards (such as * or storage.*) are not allowed.")
            if not _PERMISSION.match(permission):
                raise ApiError(400, f"Permission {permission} is not valid.")
        held = [p for p in asked if p in granted]
        return {"permissions": held} if held else {}

    def batch_get(self, parent: str, query: dict[str, list[str]]) -> dict[str, Any]:
        _check_request("serviceusage.v1", "services", "batchGet", query, None)
        self._project_of(parent)
        names = query.get("names", [])
        if len(names) > 30:
            raise ApiError(400, "Too many services requested: at most 30 names per request.")
        services = []
        for name in names:
            prefix, _, service = name.rpartition("/services/")
            if prefix != parent or not service:
                raise ApiError(400, f"Invalid service name {name}: expected {parent}/services/SERVICE")
            services.append(
                {
                    "name": f"projects/{self.project_number}/services/{service}",
                    "parent": f"projects/{self.project_number}",
                    "config": {"name": service, "title": service.split(".")[0]},
                    "state": "ENABLED" if service in self.enabled else "DISABLED",
                }
            )
        return {"services": services}

    # --- HTTP ----------------------------------------------------------------------------

    def _dispatch(self, verb: str, raw_path: str, headers, raw_body: bytes) -> dict[str, Any]:
        url = urllib.parse.urlsplit(raw_path)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        self.requests.append((verb, path))
        if not self.authorizes(headers.get("Authorization", "")):
            raise ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
            )
        try:
            body = json.loads(raw_body) if raw_body else None
        except json.JSONDecodeError:
            raise ApiError(400, "Invalid JSON payload received.") from None
        if verb == "POST" and (m := re.fullmatch(r"/v3/(projects/[^/:]+):testIamPermissions", path)):
            return self.test_iam_permissions(m[1], query, body or {})
        if verb == "POST" and (
            m := re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/repositories/[^/:]+):testIamPermissions", path)
        ):
            _check_request("artifactregistry.v1", "projects.locations.repositories", "testIamPermissions", query, body or {})
            return self._below_project(m[1], body or {})
        if verb == "POST" and (m := re.fullmatch(r"/v1/(projects/[^/]+/serviceAccounts/[^/:]+):testIamPermissions", path)):
            _check_request("iam.v1", "projects.serviceAccounts", "testIamPermissions", query, body or {})
            return self._below_project(m[1], body or {})
        if verb == "GET" and (m := re.fullmatch(r"/v1/([^/]+/[^/]+)/services:batchGet", path)):
            return self.batch_get(m[1], query)
        raise ApiError(404, f"fake iam: no method for {verb} {path}")

    def _respond(self, verb: str, path: str, headers, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return 200, self._dispatch(verb, path, headers, raw)
        except ApiError as exc:
            return exc.code, exc.body()
