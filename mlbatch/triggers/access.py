"""Who may publish, who may invoke, and what the function itself may do: the IAM half of
`invoke schedule.export`, as gcloud argv lists and the policy files they read.

Three identities meet at the function (docs/architecture.md, "Triggers"):

- publishers: `roles/pubsub.publisher` on the topic, for the principals `trigger_publishers`
  names and nobody else. The topic's policy is *set* from a file (`gcloud pubsub topics
  set-iam-policy`: "a policy file that does not contain an etag value will replace any existing
  policy", https://cloud.google.com/sdk/gcloud/reference/pubsub/topics/set-iam-policy), so a
  grant made by hand earlier does not survive an export. Cloud Scheduler publishes through its
  own service agent, whose project-wide role lets anyone allowed to create Scheduler jobs
  publish to any topic of the project (https://cloud.google.com/scheduler/docs/access-control):
  the function's policy (mlbatch.triggers.policy) is what holds against those.
- the function (`trigger_service_account`, its runtime identity: `gcloud functions deploy
  --service-account`, https://cloud.google.com/functions/docs/securing/function-identity): it
  creates instances that run as the runner (actAs on the runner account only, and
  compute.instanceAdmin.v1, what run-batch's caller needs), reads `releases/` and writes
  `runs/`, `idempotency/` and `concurrency/` in the bucket, through
  IAM conditions on the object name (docs/architecture.md, "Triggers": the identities).
  Never the runner account (refused by the settings).
- the invoker (`trigger_invoker_service_account`): the Eventarc trigger's identity, which signs
  the push to the function; it gets `roles/run.invoker` on this function only (`gcloud functions
  add-invoker-policy-binding`: on a 2nd gen function, the Cloud Run Invoker binding of its
  service, https://cloud.google.com/sdk/gcloud/reference/functions/add-invoker-policy-binding).
  A Pub/Sub trigger needs no `roles/eventarc.eventReceiver`
  (https://cloud.google.com/eventarc/standard/docs/functions/roles-permissions).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mlbatch.core.errors import BadInput
from mlbatch.core.settings import Settings

PUBLISHER = "roles/pubsub.publisher"
ACT_AS = "roles/iam.serviceAccountUser"
INSTANCE_ADMIN = "roles/compute.instanceAdmin.v1"
READER = "roles/storage.objectViewer"
WRITER = "roles/storage.objectUser"  # create, read, overwrite (the overlap slot's compare-and-swap), list
READS = ("releases/",)
WRITES = ("runs/", "idempotency/", "concurrency/")


@dataclasses.dataclass(frozen=True)
class PolicyFiles:
    """The files the grants read, under the export's folder (DIR/iam/)."""

    topic_policy: Path
    reads: Path
    writes: Path


def policy_files(out_dir: Path) -> PolicyFiles:
    folder = out_dir / "iam"
    return PolicyFiles(folder / "topic-policy.json", folder / "trigger-reads.json", folder / "trigger-writes.json")


def require_identities(settings: Settings) -> None:
    """The two service accounts an export needs (the settings refuse a malformed or shared one)."""
    where = f"mlbatch.profiles.{settings.profile}"
    for key, what in (
        ("trigger_service_account", "the function's own identity"),
        ("trigger_invoker_service_account", "the identity the Eventarc trigger invokes the function as"),
    ):
        if not getattr(settings, key):
            raise BadInput(
                f"{where}.{key} is not set: expected {what}, a service account of its own "
                f"(NAME@{settings.project or 'PROJECT'}.iam.gserviceaccount.com), not the runner's"
            )


def topic_policy(settings: Settings) -> dict:
    """The topic's whole IAM policy: the publisher role for the named principals, nothing else."""
    members = sorted(set(settings.trigger_publishers))
    return {"bindings": [{"role": PUBLISHER, "members": members}] if members else []}


def _bucket(settings: Settings) -> tuple[str, str]:
    """gs://name[/prefix] -> (name, "prefix/" or "")."""
    name, _, prefix = settings.bucket.removeprefix("gs://").partition("/")
    prefix = prefix.strip("/")
    return name, f"{prefix}/" if prefix else ""


def object_condition(settings: Settings, areas: tuple[str, ...], title: str, *, listing: bool = False) -> dict:
    """An IAM condition on the object name (`resource.name` of an object is
    projects/_/buckets/BUCKET/objects/NAME). Listing is a bucket-level call, whose resource is the
    bucket itself: `listing` admits that name too (list shows names, reading needs the prefix).
    Conditions on a bucket need uniform bucket-level access."""
    name, prefix = _bucket(settings)
    bucket = f"projects/_/buckets/{name}"
    terms = [f'resource.name == "{bucket}"'] if listing else []
    terms += [f'resource.name.startsWith("{bucket}/objects/{prefix}{area}")' for area in areas]
    return {
        "title": title,
        "description": f"mlbatch trigger: {', '.join(prefix + a for a in areas)} of gs://{name}",
        "expression": " || ".join(terms),
    }


def write_files(settings: Settings, out_dir: Path) -> PolicyFiles:
    files = policy_files(out_dir)
    files.topic_policy.parent.mkdir(parents=True, exist_ok=True)
    documents = {
        files.topic_policy: topic_policy(settings),
        files.reads: object_condition(settings, READS, "mlbatch-trigger-reads", listing=True),
        files.writes: object_condition(settings, WRITES, "mlbatch-trigger-writes"),
    }
    for path, document in documents.items():
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return files


def grant_commands(settings: Settings, topic: str, files: PolicyFiles) -> list[list[str]]:
    """Publishers on the topic, then what the function's identity may do; before the deploy."""
    project = ["--project", settings.project]
    trigger = f"serviceAccount:{settings.trigger_service_account}"
    bucket = "gs://" + _bucket(settings)[0]
    return [
        ["gcloud", "pubsub", "topics", "set-iam-policy", topic, str(files.topic_policy), *project],
        [
            "gcloud", "iam", "service-accounts", "add-iam-policy-binding", settings.service_account,
            "--member", trigger, "--role", ACT_AS, *project,
        ],
        ["gcloud", "projects", "add-iam-policy-binding", settings.project, "--member", trigger, "--role", INSTANCE_ADMIN],
        [
            "gcloud", "storage", "buckets", "add-iam-policy-binding", bucket,
            "--member", trigger, "--role", READER, "--condition-from-file", str(files.reads), *project,
        ],
        [
            "gcloud", "storage", "buckets", "add-iam-policy-binding", bucket,
            "--member", trigger, "--role", WRITER, "--condition-from-file", str(files.writes), *project,
        ],
    ]  # fmt: skip


def invoker_command(settings: Settings, function: str) -> list[str]:
    """roles/run.invoker on this function for the Eventarc trigger's identity; after the deploy."""
    return [
        "gcloud", "functions", "add-invoker-policy-binding", function,
        "--region", settings.region, "--member", f"serviceAccount:{settings.trigger_invoker_service_account}",
        "--project", settings.project,
    ]  # fmt: skip
