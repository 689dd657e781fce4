"""Who may touch which objects of the bucket, in the form Google's IAM checks it.

The bucket's top-level folders, each written by one identity (docs/architecture.md,
"Identities and trust"); the resource names an IAM condition or a Credential Access
Boundary sees for them; and a job's `google_access` in jobs.yaml: the object prefixes its
container may read and write, turned into the access boundary of its downscoped token.

Resource names, as IAM conditions see them on Cloud Storage
(https://cloud.google.com/iam/docs/conditions-resource-attributes#resource-name):
an object is `projects/_/buckets/BUCKET/objects/OBJECT`, a bucket `projects/_/buckets/BUCKET`.
A list request is checked against the bucket, never an object, so `resource.name.startsWith(
".../objects/runs/")` never grants `storage.objects.list`; the request's `prefix` parameter is
the API attribute `storage.googleapis.com/objectListPrefix`, which a condition reads with
`api.getAttribute(...)` (https://cloud.google.com/iam/docs/conditions-attribute-reference#api-attributes).
Both forms are accepted in a Credential Access Boundary's availability condition too
(https://cloud.google.com/iam/docs/downscoping-short-lived-credentials).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mlbatch.core.errors import BadInput

# The bucket's folders (one place: tests/unit/test_access.py holds the code's keys to them).
RELEASES = "releases/"  # manifests: the release identity's
CODE = "batch_code/"  # code bundles: the release identity's
RUNS = "runs/"  # specs, attempts, logs, results: the trigger's and the runner's
IDEMPOTENCY = "idempotency/"  # the trigger's
CONCURRENCY = "concurrency/"  # the trigger's
FOLDERS = (RELEASES, CODE, RUNS, IDEMPOTENCY, CONCURRENCY)

OBJECT_LIST_PREFIX = "storage.googleapis.com/objectListPrefix"
# A job's prefixes may name its own run; the agent fills these in.
PLACEHOLDERS = ("{job}", "{run_id}")
MAX_PREFIXES = 10
# A prefix: folders of plain name characters (or a placeholder), ending with "/" so that
# "data/a/" cannot also match "data/a-secret/...", as startsWith would.
_SEGMENT = r"(?:[A-Za-z0-9._-]|\{job\}|\{run_id\})+"
_PREFIX = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*/$")


def split_bucket(uri: str) -> tuple[str, str]:
    """gs://name[/prefix] -> (name, "prefix/" or "")."""
    if not uri.startswith("gs://"):
        raise BadInput(f"invalid bucket {uri!r}: IAM applies to gs://bucket[/prefix] only")
    name, _, prefix = uri[len("gs://") :].partition("/")
    prefix = prefix.strip("/")
    return name, f"{prefix}/" if prefix else ""


def bucket_resource(uri: str) -> str:
    return f"projects/_/buckets/{split_bucket(uri)[0]}"


def object_resource(uri: str, key_prefix: str) -> str:
    """The resource name of objects whose key (below the bucket URI's own prefix) starts with `key_prefix`."""
    name, prefix = split_bucket(uri)
    return f"projects/_/buckets/{name}/objects/{prefix}{key_prefix}"


def cel_string(text: str) -> str:
    """A CEL string literal. JSON's escaping is CEL's for what a prefix may hold."""
    return json.dumps(text)


def objects_expression(uri: str, key_prefixes: Iterable[str]) -> str:
    """Objects under any of the prefixes (reads and writes of them; never a list)."""
    return " || ".join(f"resource.name.startsWith({cel_string(object_resource(uri, p))})" for p in key_prefixes)


def list_expression(uri: str, key_prefixes: Iterable[str]) -> str:
    """Lists of any of the prefixes: a list is checked against the bucket, so this reads the
    request's prefix parameter (a list without one, of the whole bucket, is not granted)."""
    _, prefix = split_bucket(uri)
    attribute = f"api.getAttribute({cel_string(OBJECT_LIST_PREFIX)}, {cel_string('')})"
    return " || ".join(f"{attribute}.startsWith({cel_string(prefix + p)})" for p in key_prefixes)


def prefix_condition(uri: str, key_prefixes: Iterable[str], list_prefixes: Iterable[str] = ()) -> str:
    """Objects under `key_prefixes`, and lists of `list_prefixes`."""
    key_prefixes, list_prefixes = tuple(key_prefixes), tuple(list_prefixes)
    if not key_prefixes:
        raise ValueError("a condition needs at least one prefix")
    parts = [objects_expression(uri, key_prefixes)]
    if list_prefixes:
        parts.append(list_expression(uri, list_prefixes))
    return " || ".join(parts)


@dataclasses.dataclass(frozen=True)
class GoogleAccess:
    """A job's declared Google access: object prefixes (relative to the bucket URI) its
    container may read, and may write. Empty: the job gets no credentials at all."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.read or self.write)

    def to_dict(self) -> dict[str, list[str]]:
        return {"read": list(self.read), "write": list(self.write)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GoogleAccess:
        data = data or {}
        return cls(read=tuple(data.get("read", ())), write=tuple(data.get("write", ())))

    def for_run(self, job: str, run_id: str) -> GoogleAccess:
        """The prefixes with {job} and {run_id} filled in."""

        def fill(prefix: str) -> str:
            return prefix.replace("{job}", job).replace("{run_id}", run_id)

        return GoogleAccess(read=tuple(map(fill, self.read)), write=tuple(map(fill, self.write)))


PREFIX_FORM = (
    "an object prefix of folders of letters, digits, '.', '_', '-' (or {job}, {run_id}) ending with '/', e.g. datasets/digits/"
)
WRITE_FORM = f"a prefix under {RUNS}, e.g. {RUNS}{{job}}/{{run_id}}/scratch/: a job writes nowhere else"


def prefix_problem(prefix: str, write: bool) -> str:
    """What is wrong with a google_access prefix (the form expected), or "" when nothing is.

    Writes are limited to `runs/`: the runner identity, whose token is downscoped for the job,
    may write nowhere else, and releases, code bundles and the triggers' records are never a
    job's to write."""
    segments = prefix.rstrip("/").split("/")
    if not _PREFIX.match(prefix) or any(s in (".", "..") for s in segments):
        return PREFIX_FORM
    if write and not prefix.startswith(RUNS):
        return WRITE_FORM
    return ""


# The roles a boundary's rules allow at most; the token's identity must hold them too.
BOUNDARY_READ_ROLE = "roles/storage.objectViewer"
BOUNDARY_WRITE_ROLE = "roles/storage.objectUser"


def access_boundary(uri: str, access: GoogleAccess) -> dict[str, Any]:
    """The Credential Access Boundary of a job's token, in the form the Security Token Service
    takes it (the `options` of the token exchange; google.auth.downscoped builds the same):
    reads (and lists) under the read and write prefixes, writes under the write prefixes."""
    resource = f"//storage.googleapis.com/{bucket_resource(uri)}"
    rules = []
    readable = (*access.read, *access.write)
    if readable:
        rules.append(
            {
                "availableResource": resource,
                "availablePermissions": [f"inRole:{BOUNDARY_READ_ROLE}"],
                "availabilityCondition": {"title": "mlbatch job reads", "expression": prefix_condition(uri, readable, readable)},
            }
        )
    if access.write:
        rules.append(
            {
                "availableResource": resource,
                "availablePermissions": [f"inRole:{BOUNDARY_WRITE_ROLE}"],
                "availabilityCondition": {"title": "mlbatch job writes", "expression": prefix_condition(uri, access.write)},
            }
        )
    return {"accessBoundary": {"accessBoundaryRules": rules}}
