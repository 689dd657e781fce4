"""Before a gcp release touches anything: the APIs it needs are enabled and the release
identity holds every permission it uses. One message lists all that is missing, with the
role that grants each, so a new project is fixed in one round, not one failure at a time.

Service Usage `services.batchGet` tells which APIs are on; Cloud Resource Manager
`projects.testIamPermissions` tells which permissions the caller holds on the project
(the API answers with the subset granted; it never fails for a missing one), and on the
Shared VPC host project for the subnet. Clients and errors are mlbatch.gcp's.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc

from mlbatch.core.errors import PermissionDenied
from mlbatch.core.gcp_base import retry
from mlbatch.core.settings import Settings
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients
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
    "artifactregistry.repositories.uploadArtifacts": "roles/artifactregistry.writer",
    "artifactregistry.repositories.downloadArtifacts": "roles/artifactregistry.writer",
    "iam.serviceAccounts.actAs": "roles/iam.serviceAccountUser",
}
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
    """(permission, role, project) of each permission the caller lacks, on the project and, for the
    subnet, on the project that owns the network."""
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
        missing += [(p, PERMISSIONS[p], project) for p in wanted if p not in granted]
    return missing


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
    for permission, role, project in permissions:
        by_role.setdefault((role, project), []).append(permission)
    for (role, project), names in sorted(by_role.items()):
        problems.append(f"missing {', '.join(names)}: grant {role} on project {project} to {principal}")
    if problems:
        raise PermissionDenied(
            f"the release cannot start in project {settings.project} (nothing was written):\n  - "
            + "\n  - ".join(problems)
            + "\n(see README, 'Releasing into Google Cloud')"
        )
