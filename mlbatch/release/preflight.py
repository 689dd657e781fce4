"""Before a gcp release touches anything: the APIs it needs are enabled and the release
identity holds every permission it uses. One message lists all that is missing, with the
role that grants each, so a new project is fixed in one round, not one failure at a time.

Service Usage `services.batchGet` tells which APIs are on; Cloud Resource Manager
`projects.testIamPermissions` tells which permissions the caller holds on the project
(the API answers with the subset granted; it never fails for a missing one).
"""

from __future__ import annotations

from google.api_core import exceptions as gexc

from mlbatch.core.errors import MlbatchError, PermissionDenied
from mlbatch.core.settings import Settings

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


def _client_options(endpoint: str) -> dict[str, str] | None:
    return {"api_endpoint": endpoint} if endpoint else None


def missing_services(settings: Settings, credentials) -> list[str]:
    from google.cloud import service_usage_v1

    client = service_usage_v1.ServiceUsageClient(
        credentials=credentials, transport="rest", client_options=_client_options(settings.service_usage_endpoint)
    )
    parent = f"projects/{settings.project}"
    response = client.batch_get_services(request={"parent": parent, "names": [f"{parent}/services/{s}" for s in SERVICES]})
    on = service_usage_v1.State.ENABLED
    enabled = {s.config.name or s.name.rsplit("/", 1)[-1] for s in response.services if s.state == on}
    return [name for name in SERVICES if name not in enabled]


def missing_permissions(settings: Settings, credentials) -> list[str]:
    from google.cloud import resourcemanager_v3

    client = resourcemanager_v3.ProjectsClient(
        credentials=credentials, transport="rest", client_options=_client_options(settings.resource_manager_endpoint)
    )
    response = client.test_iam_permissions(request={"resource": f"projects/{settings.project}", "permissions": list(PERMISSIONS)})
    granted = set(response.permissions)
    return [p for p in PERMISSIONS if p not in granted]


def check(settings: Settings, credentials, principal: str) -> None:
    """Raise PermissionDenied listing every missing API and permission (with its role)."""
    problems: list[str] = []
    try:
        services = missing_services(settings, credentials)
    except gexc.Unauthorized as exc:
        raise PermissionDenied(f"Google refused the credentials of {principal}: {exc.message}") from None
    except gexc.Forbidden as exc:
        problems.append(
            f"cannot read which APIs are enabled ({exc.message}): grant roles/serviceusage.serviceUsageConsumer, "
            "and enable serviceusage.googleapis.com"
        )
        services = []
    except gexc.GoogleAPICallError as exc:
        raise MlbatchError(f"preflight: Service Usage API failed: {type(exc).__name__}: {exc.message}") from exc
    for name in services:
        problems.append(
            f"API {name} is not enabled (needed to {SERVICES[name]}): gcloud services enable {name} --project {settings.project}"
        )
    try:
        permissions = missing_permissions(settings, credentials)
    except gexc.Forbidden as exc:
        problems.append(f"cannot test permissions ({exc.message}): enable cloudresourcemanager.googleapis.com")
        permissions = []
    except gexc.GoogleAPICallError as exc:
        raise MlbatchError(f"preflight: Resource Manager API failed: {type(exc).__name__}: {exc.message}") from exc
    by_role: dict[str, list[str]] = {}
    for permission in permissions:
        by_role.setdefault(PERMISSIONS[permission], []).append(permission)
    for role, names in sorted(by_role.items()):
        problems.append(f"missing {', '.join(names)}: grant {role} on project {settings.project} to {principal}")
    if problems:
        raise PermissionDenied(
            f"the release cannot start in project {settings.project} (nothing was written):\n  - "
            + "\n  - ".join(problems)
            + "\n(see README, 'Releasing into Google Cloud')"
        )
