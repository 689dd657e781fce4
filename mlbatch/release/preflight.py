"""Before a gcp release touches anything: the APIs it needs are enabled and the release
identity holds every permission it uses. One message lists all that is missing, with the
role that grants each, so a new project is fixed in one round, not one failure at a time.

Service Usage `services.batchGet` tells which APIs are on; `testIamPermissions` tells which
permissions the caller holds (the API answers with the subset granted; it never fails for a
missing one), asked of the resource each grant is on (mlbatch.iam.plan): Cloud Resource
Manager for the project and, for the subnet, the Shared VPC host project; Artifact Registry
for the repository (roles/artifactregistry.writer is granted there, which a project-level
question does not see); IAM for the runner service account (roles/iam.serviceAccountUser on
it). A registry that is not an Artifact Registry repository (the tests' local one) is not
asked. Clients and errors are mlbatch.gcp's.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc

from mlbatch.core.errors import PermissionDenied
from mlbatch.core.gcp_base import retry
from mlbatch.core.names import artifact_repository
from mlbatch.core.settings import Settings
from mlbatch.gcp import errors
from mlbatch.gcp.clients import ARTIFACT_REGISTRY, IAM, Clients, held_permissions
from mlbatch.gcp.network import vpc

SERVICES = {
    "compute.googleapis.com": "bake, test and serve the VM image",
    "artifactregistry.googleapis.com": "push the containers",
    "storage.googleapis.com": "upload the code bundle and the manifest",
    "iam.googleapis.com": "run the bake and test VMs as the runner service account",
    "batch.googleapis.com": "run the release's sweeps (one Cloud Batch job each)",
}

# permission -> the predefined role that grants it (the smallest one that does). Storage is
# not asked here: the release's bucket grant is conditioned on releases/ and batch_code/
# (mlbatch.iam.plan), which a project-level testIamPermissions cannot see.
PERMISSIONS = {
    "compute.images.create": "roles/compute.storageAdmin",
    "compute.images.get": "roles/compute.storageAdmin",
    "compute.images.list": "roles/compute.storageAdmin",
    "compute.images.delete": "roles/compute.storageAdmin",
    "compute.images.deprecate": "roles/compute.storageAdmin",
    "compute.images.setLabels": "roles/compute.storageAdmin",
    "compute.images.useReadOnly": "roles/compute.storageAdmin",
    "compute.disks.create": "roles/compute.instanceAdmin.v1",
    "compute.disks.get": "roles/compute.instanceAdmin.v1",
    "compute.disks.delete": "roles/compute.instanceAdmin.v1",
    "compute.disks.use": "roles/compute.instanceAdmin.v1",
    "compute.disks.useReadOnly": "roles/compute.instanceAdmin.v1",
    "compute.instances.create": "roles/compute.instanceAdmin.v1",
    "compute.instances.delete": "roles/compute.instanceAdmin.v1",
    "compute.instances.get": "roles/compute.instanceAdmin.v1",
    "compute.instances.setMetadata": "roles/compute.instanceAdmin.v1",
    "compute.instances.setLabels": "roles/compute.instanceAdmin.v1",
    "compute.instances.setServiceAccount": "roles/compute.instanceAdmin.v1",
    "compute.instances.getSerialPortOutput": "roles/compute.instanceAdmin.v1",
    "compute.zoneOperations.get": "roles/compute.instanceAdmin.v1",
    "compute.globalOperations.get": "roles/compute.storageAdmin",
    "compute.subnetworks.use": "roles/compute.networkUser",
}
# Asked of the repository and of the runner service account, where mlbatch.iam.plan grants them.
REPOSITORY_PERMISSIONS = {
    "artifactregistry.repositories.uploadArtifacts": "roles/artifactregistry.writer",
    "artifactregistry.repositories.downloadArtifacts": "roles/artifactregistry.writer",
}
RUNNER_ACCOUNT_PERMISSIONS = {"iam.serviceAccounts.actAs": "roles/iam.serviceAccountUser"}
ASKED = {**PERMISSIONS, **REPOSITORY_PERMISSIONS, **RUNNER_ACCOUNT_PERMISSIONS}  # every permission the preflight asks
# Those asked on the project that owns the network: the Shared VPC host, or the project itself.
NETWORK_PERMISSIONS = ("compute.subnetworks.use",)
API_DEADLINE = 120.0  # seconds a call may spend on transient-error retries


def missing_services(settings: Settings, clients: Clients) -> list[str]:
    from google.cloud import service_usage_v1

    parent = f"projects/{settings.project}"
    response = clients.service_usage().batch_get_services(
        request={"parent": parent, "names": [f"{parent}/services/{s}" for s in SERVICES]},
        retry=retry(API_DEADLINE),
        timeout=60,
    )
    on = service_usage_v1.State.ENABLED
    enabled = {s.config.name or s.name.rsplit("/", 1)[-1] for s in response.services if s.state == on}
    return [name for name in SERVICES if name not in enabled]


def missing_permissions(settings: Settings, clients: Clients) -> list[tuple[str, str, str]]:
    """(permission, role, where: "project P", "repository R", "service account E") of each
    permission the caller lacks, asked of the resource its grant is on."""
    host = vpc(settings).project
    asks = {settings.project: [p for p in PERMISSIONS if host == settings.project or p not in NETWORK_PERMISSIONS]}
    if host != settings.project:
        asks[host] = list(NETWORK_PERMISSIONS)
    missing = []
    for project, wanted in asks.items():
        response = clients.resource_manager().test_iam_permissions(
            request={"resource": f"projects/{project}", "permissions": wanted},
            retry=retry(API_DEADLINE),
            timeout=60,
        )
        granted = set(response.permissions)
        missing += [(p, PERMISSIONS[p], f"project {project}") for p in wanted if p not in granted]
    for where, url, wanted_roles in _resource_asks(settings, clients):
        session, base = url
        held = held_permissions(session, base, tuple(wanted_roles), API_DEADLINE)
        missing += [(p, role, where) for p, role in wanted_roles.items() if p not in held]
    return missing


def _resource_asks(settings: Settings, clients: Clients) -> list[tuple[str, tuple[Any, str], dict[str, str]]]:
    """(where, (session, testIamPermissions URL), {permission: role}) of the repository and the
    runner account. The test profile's fake of these answers at resource_manager_endpoint."""
    fake = settings.resource_manager_endpoint
    asks = []
    repository = artifact_repository(settings.registry)
    if repository is not None:
        location, project, name = repository
        session, base = clients.authorized_session(fake, ARTIFACT_REGISTRY)
        url = f"{base}/v1/projects/{project}/locations/{location}/repositories/{name}:testIamPermissions"
        asks.append((f"repository {settings.registry}", (session, url), REPOSITORY_PERMISSIONS))
    session, base = clients.authorized_session(fake, IAM)
    account = settings.service_account
    url = f"{base}/v1/projects/{settings.project}/serviceAccounts/{account}:testIamPermissions"
    asks.append((f"service account {account}", (session, url), RUNNER_ACCOUNT_PERMISSIONS))
    return asks


def check(settings: Settings, clients: Clients, principal: str) -> None:
    """Raise PermissionDenied listing every missing API and permission (with its role)."""
    problems: list[str] = []
    try:
        services = missing_services(settings, clients)
    except gexc.Forbidden as exc:
        problems.append(
            f"cannot read which APIs are enabled ({exc.message}): grant roles/serviceusage.serviceUsageConsumer, "
            "and enable serviceusage.googleapis.com"
        )
        services = []
    except gexc.GoogleAPIError as exc:
        raise errors.translate(exc, "preflight: asking Service Usage which APIs are enabled") from exc
    for name in services:
        problems.append(
            f"API {name} is not enabled (needed to {SERVICES[name]}): gcloud services enable {name} --project {settings.project}"
        )
    try:
        permissions = missing_permissions(settings, clients)
    except gexc.Forbidden as exc:
        problems.append(f"cannot test permissions ({exc.message}): enable cloudresourcemanager.googleapis.com")
        permissions = []
    except gexc.GoogleAPIError as exc:
        raise errors.translate(exc, "preflight: asking Resource Manager which permissions are held") from exc
    by_role: dict[tuple[str, str], list[str]] = {}
    for permission, role, where in permissions:
        by_role.setdefault((role, where), []).append(permission)
    for (role, where), names in sorted(by_role.items()):
        problems.append(f"missing {', '.join(names)}: grant {role} on {where} to {principal}")
    if problems:
        raise PermissionDenied(
            f"the release cannot start in project {settings.project} (nothing was written):\n  - "
            + "\n  - ".join(problems)
            + "\n(see README, 'Releasing to Google Cloud')"
        )
