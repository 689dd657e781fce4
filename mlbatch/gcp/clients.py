"""Google API clients for the gcp and test profiles, built in one place.

Every client uses the REST transport. On the gcp profile it gets the Application Default
Credentials (core.gcp_base.default_credentials: none -> 111 with what to do, before anything is
opened). On the test profile the Compute and Batch endpoints are fakes on loopback, reached
without credentials (the settings refuse those endpoints elsewhere); Resource Manager and
Service Usage fakes check the token, so they get the real credentials and only the endpoint.
"""

from __future__ import annotations

from typing import Any

from mlbatch.core import gcp_base
from mlbatch.core.settings import Settings

RESOURCE_MANAGER = "https://cloudresourcemanager.googleapis.com"
IAM = "https://iam.googleapis.com"
ARTIFACT_REGISTRY = "https://artifactregistry.googleapis.com"
OSLOGIN = "https://oslogin.googleapis.com"


class Clients:
    """The clients one settings object needs, made when first used; the credentials are looked
    up once (a missing credential fails the first client, with the message of auth)."""

    def __init__(self, settings: Settings, credentials: Any = None):
        self.settings = settings
        self._credentials = credentials
        self._made: dict[str, Any] = {}

    @property
    def credentials(self) -> Any:
        if self._credentials is None:
            self._credentials, _ = gcp_base.default_credentials()
        return gcp_base.refreshed(self._credentials)

    def _kwargs(self, fake_endpoint: str) -> dict[str, Any]:
        """A fake's endpoint (test profile: anonymous), or Google's with the credentials."""
        from google.auth.credentials import AnonymousCredentials

        if fake_endpoint:
            return {"transport": "rest", "client_options": {"api_endpoint": fake_endpoint}, "credentials": AnonymousCredentials()}
        return {"transport": "rest", "credentials": self.credentials}

    def compute(self, kind: str) -> Any:
        """A google-cloud-compute client by class name (InstancesClient, ImagesClient, ZoneOperationsClient...), one of each."""
        if kind not in self._made:
            from google.cloud import compute_v1

            self._made[kind] = getattr(compute_v1, kind)(**self._kwargs(self.settings.compute_endpoint))
        return self._made[kind]

    def batch(self) -> Any:
        if "batch" not in self._made:
            from google.cloud import batch_v1

            self._made["batch"] = batch_v1.BatchServiceClient(**self._kwargs(self.settings.batch_endpoint))
        return self._made["batch"]

    def _with_token(self, endpoint: str) -> dict[str, Any]:
        """The real credentials, at the test profile's fake endpoint if there is one (it checks the token)."""
        options = {"api_endpoint": endpoint} if endpoint else None
        return {"transport": "rest", "credentials": self.credentials, "client_options": options}

    def resource_manager(self) -> Any:
        from google.cloud import resourcemanager_v3

        return resourcemanager_v3.ProjectsClient(**self._with_token(self.settings.resource_manager_endpoint))

    def service_usage(self) -> Any:
        from google.cloud import service_usage_v1

        return service_usage_v1.ServiceUsageClient(**self._with_token(self.settings.service_usage_endpoint))

    def session(self, fake_endpoint: str, google_endpoint: str) -> tuple[Any, str]:
        """An authorized HTTP session and base URL, for an API called without its client library: the
        test profile's fake (anonymous, as the fake Compute API), or Google's with the credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession

        if fake_endpoint:
            return AuthorizedSession(AnonymousCredentials()), fake_endpoint
        return AuthorizedSession(self.credentials), google_endpoint

    def authorized_session(self, fake_endpoint: str, google_endpoint: str) -> tuple[Any, str]:
        """An HTTP session with the credentials, at the test profile's fake if there is one (a
        fake that checks the token, as the release preflight's do), else at Google's endpoint."""
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(self.credentials), fake_endpoint or google_endpoint


def held_permissions(session: Any, url: str, permissions: tuple[str, ...], deadline: float) -> set[str]:
    """The subset of `permissions` the caller holds on the resource of `url` (a REST
    `...:testIamPermissions`, which needs no permission to ask), with retries of transient
    errors; other errors are raised as google-api-core's (the caller translates them)."""
    from google.api_core import exceptions as gexc

    def ask() -> set[str]:
        response = session.post(url, json={"permissions": list(permissions)}, timeout=60)
        if response.status_code >= 400:
            raise gexc.from_http_response(response)
        return set(response.json().get("permissions", []))

    return gcp_base.retry(deadline)(ask)()
