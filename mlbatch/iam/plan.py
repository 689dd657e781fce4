"""The three identities and what each is granted: one list, read by the setup commands
(mlbatch.iam.setup), the bucket policy check (mlbatch.iam.policy), the docs and the tests'
IAM model of the bucket (tests/support/gcs_iam.py). docs/architecture.md, "Identities and trust".

- release (CI): writes `releases/` and `batch_code/` (with the object retention that protects
  them: roles/storage.objectAdmin holds storage.objects.setRetention), images, Artifact Registry.
- runner (the run VMs): reads `releases/`, `batch_code/` and what its jobs declare they read,
  pulls, writes only under `runs/`, and may delete run instances (`mlb-*`).
- trigger (the Pub/Sub function, cron, Rundeck): reads `releases/`, writes `runs/`,
  `idempotency/`, `concurrency/`, creates instances and Batch jobs as the runner.

Every bucket grant carries an IAM condition on the object name, so the grant reaches no
other folder; a bucket with uniform bucket-level access is required for conditions
(https://cloud.google.com/storage/docs/access-control/iam#conditions).

"May delete only its own instance": IAM cannot tell one run VM from another, since every
run VM holds the same runner token. The runner gets a custom role holding only
compute.instances.delete, on the project, conditioned on the instance name `mlb-*`
(what `core.names.instance_name` gives every run instance): it can delete run instances and
nothing else, not the bake VMs, not other instances of the project. Deleting exactly itself
would take a service account per run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from mlbatch.core.access import CODE, CONCURRENCY, IDEMPOTENCY, RELEASES, RUNS, prefix_condition
from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput
from mlbatch.core.names import GCE_NAME
from mlbatch.core.settings import Settings

BUCKET, PROJECT, RUNNER_ACCOUNT, REPOSITORY = "bucket", "project", "runner-account", "repository"
NETWORK_PROJECT = "network-project"  # the project that owns the subnetwork: the Shared VPC host, or `project`
INSTANCE_PREFIX = "mlb-"  # core.names.instance_name; tests/unit/test_iam.py holds them together


@dataclasses.dataclass(frozen=True)
class Condition:
    title: str
    expression: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class CustomRole:
    role_id: str
    title: str
    permissions: tuple[str, ...]
    description: str

    def name(self, project: str) -> str:
        return f"projects/{project}/roles/{self.role_id}"


# What the runner's agent calls to end its VM (mlbatch.agent.gce.delete_self): DELETE, nothing else.
RUN_DELETE = CustomRole(
    "mlbatchRunInstanceDelete",
    "mlbatch: delete run instances",
    ("compute.instances.delete",),
    "Lets a run VM delete itself (conditioned on the run instance names)",
)
# What the release preflight needs to read the bucket's IAM policy (mlbatch.iam.policy).
POLICY_READER = CustomRole(
    "mlbatchBucketPolicyReader",
    "mlbatch: read the bucket's IAM policy",
    ("storage.buckets.get", "storage.buckets.getIamPolicy"),
    "Lets the release preflight check that the runner cannot write releases/",
)
CUSTOM_ROLES = (RUN_DELETE, POLICY_READER)


@dataclasses.dataclass(frozen=True)
class Grant:
    role: str  # roles/... or a CustomRole's role_id (made project-qualified by `role_name`)
    on: str  # BUCKET, PROJECT, NETWORK_PROJECT, RUNNER_ACCOUNT or REPOSITORY
    why: str
    condition: Condition | None = None

    def role_name(self, project: str) -> str:
        custom = {r.role_id: r for r in CUSTOM_ROLES}
        return custom[self.role].name(project) if self.role in custom else self.role


@dataclasses.dataclass(frozen=True)
class Identity:
    key: str  # release | runner | trigger
    account: str
    purpose: str
    grants: tuple[Grant, ...]

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.account}"


def default_account(settings: Settings, key: str) -> str:
    return f"mlbatch-{key}@{settings.project}.iam.gserviceaccount.com"


def _objects(settings: Settings, title: str, prefixes: Iterable[str], list_prefixes: Iterable[str] = ()) -> Condition:
    prefixes, listed = tuple(prefixes), tuple(list_prefixes)
    description = f"objects under {', '.join(prefixes)}" + (f"; lists of {', '.join(listed)}" if listed else "")
    return Condition(title, prefix_condition(settings.bucket, prefixes, listed), description)


def job_read_prefixes(catalog: Mapping[str, Job]) -> tuple[str, ...]:
    """What the jobs declare they read (google_access.read), up to the first placeholder: the
    runner must be able to read it for a job's downscoped token to."""
    found: list[str] = []
    for job in catalog.values():
        for prefix in job.google_access.read:
            literal = prefix.split("{", 1)[0]
            literal = literal[: literal.rfind("/") + 1]
            if literal and literal not in found and not literal.startswith((RELEASES, CODE, RUNS)):
                found.append(literal)
    return tuple(found)


def identities(
    settings: Settings, catalog: Mapping[str, Job], release_account: str = "", trigger_account: str = ""
) -> tuple[Identity, Identity, Identity]:
    """(release, runner, trigger) with their grants, for the gcp profile's settings."""
    if not settings.bucket.startswith("gs://") or not settings.project:
        raise BadInput(f"profile {settings.profile}: identities are for a gs:// bucket in a project (use --profile gcp)")
    release_account = release_account or default_account(settings, "release")
    trigger_account = trigger_account or settings.trigger_service_account or default_account(settings, "trigger")
    for account in (release_account, trigger_account):
        local, _, domain = account.partition("@")
        if not GCE_NAME.fullmatch(local) or not domain.endswith(".iam.gserviceaccount.com"):
            raise BadInput(f"invalid service account {account!r}: expected NAME@PROJECT.iam.gserviceaccount.com")
    runner_reads = (RELEASES, CODE, *job_read_prefixes(catalog))
    release = Identity(
        "release",
        release_account,
        "CI's release: containers, code bundle, VM image, manifest",
        (
            Grant(
                "roles/storage.objectAdmin",
                BUCKET,
                "write the code bundle and the manifest, and lock them (object retention)",
                _objects(settings, "mlbatch release writes", (RELEASES, CODE), (RELEASES, CODE)),
            ),
            Grant(POLICY_READER.role_id, BUCKET, "the preflight reads the bucket's IAM policy"),
            Grant("roles/compute.instanceAdmin.v1", PROJECT, "the bake VM, the image-test VM, their disks and serial output"),
            Grant("roles/compute.storageAdmin", PROJECT, "create, deprecate, delete and label images"),
            Grant("roles/compute.networkUser", NETWORK_PROJECT, "use the subnetwork (with Shared VPC: the host project)"),
            Grant("roles/serviceusage.serviceUsageConsumer", PROJECT, "the preflight's view of enabled APIs"),
            Grant("roles/iam.serviceAccountUser", RUNNER_ACCOUNT, "run the bake and test VMs as the runner"),
            Grant("roles/artifactregistry.writer", REPOSITORY, "push the containers"),
            *(
                (Grant("roles/compute.osAdminLogin", PROJECT, "OS Login for the bake and the image test"),)
                if settings.os_login
                else ()
            ),
        ),
    )
    runner = Identity(
        "runner",
        settings.service_account,
        "the run VMs (and the bake VM; the image-test VM runs with none): pull, fetch, run, record",
        (
            Grant(
                "roles/storage.objectViewer",
                BUCKET,
                "read the code bundle, the manifests and the data its jobs declare",
                _objects(settings, "mlbatch runner reads", runner_reads),
            ),
            Grant(
                "roles/storage.objectUser",
                BUCKET,
                "write the run's records, log and results (compose and delete log parts)",
                _objects(settings, "mlbatch runner writes runs", (RUNS,)),
            ),
            Grant(
                RUN_DELETE.role_id,
                PROJECT,
                "end its VM when the run ends (any run instance: every run VM holds the same token)",
                Condition(
                    "mlbatch run instances",
                    'resource.type == "compute.googleapis.com/Instance" && '
                    f'resource.name.extract("/instances/{{name}}").startsWith("{INSTANCE_PREFIX}")',
                    f"instances named {INSTANCE_PREFIX}*",
                ),
            ),
            Grant("roles/artifactregistry.reader", REPOSITORY, "pull the release's containers"),
            Grant("roles/logging.logWriter", PROJECT, "the VM's logs"),
            Grant("roles/batch.agentReporter", PROJECT, "Cloud Batch VMs of sweeps report their state"),
        ),
    )
    trigger = Identity(
        "trigger",
        trigger_account,
        "whatever starts runs: the Pub/Sub function, cron or Rundeck's host",
        (
            Grant(
                "roles/storage.objectViewer",
                BUCKET,
                "read manifests and resolve --version latest",
                _objects(settings, "mlbatch trigger reads releases", (RELEASES,), (RELEASES,)),
            ),
            Grant(
                "roles/storage.objectUser",
                BUCKET,
                "write run specs, idempotency and concurrency records; follow runs",
                _objects(settings, "mlbatch trigger writes", (RUNS, IDEMPOTENCY, CONCURRENCY), (RUNS,)),
            ),
            Grant("roles/compute.instanceAdmin.v1", PROJECT, "create, watch and delete run instances"),
            Grant("roles/compute.networkUser", NETWORK_PROJECT, "use the subnetwork (with Shared VPC: the host project)"),
            Grant("roles/batch.jobsEditor", PROJECT, "sweeps: one Cloud Batch job each"),
            Grant("roles/iam.serviceAccountUser", RUNNER_ACCOUNT, "create instances and Batch jobs that run as the runner"),
        ),
    )
    return release, runner, trigger
