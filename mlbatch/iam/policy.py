"""Can the runner write `releases/`? What can honestly be checked, and how.

Storage's `testIamPermissions` cannot answer: it is asked as the caller, not the runner, and
a conditional grant has no object to be evaluated against. What can be read is the bucket's
own IAM policy (`buckets.getIamPolicy`, policy version 3 so that conditions come back): every
binding naming the runner (or allUsers / allAuthenticatedUsers) whose role may create, delete
or replace objects, and whose condition (if any) could hold for an object under `releases/`.
A condition is read as CEL's `||`, `&&` and parentheses over `resource.name.startsWith("...")`,
`api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("...")` and
`resource.type == "..."` (the forms mlbatch.iam.plan writes); one in any other form cannot be
shown harmless and is reported. Not seen: grants on the project, folder or organization
(they reach every bucket), and custom roles' permissions (such a role is reported if the
runner holds it on the bucket).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mlbatch.core.access import RELEASES, object_resource, split_bucket
from mlbatch.core.errors import BadInput, PermissionDenied
from mlbatch.core.settings import Settings
from mlbatch.iam.plan import POLICY_READER

# Predefined roles that hold storage.objects.create, .delete or .update (overwrite, delete,
# or change an object's metadata and holds), from https://cloud.google.com/iam/docs/roles-permissions/storage
WRITING_ROLES = frozenset(
    {
        "roles/storage.admin",
        "roles/storage.objectAdmin",
        "roles/storage.objectUser",
        "roles/storage.objectCreator",
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketWriter",
        "roles/storage.legacyObjectOwner",
        "roles/storage.folderAdmin",
        "roles/owner",
        "roles/editor",
    }
)
# Predefined roles that cannot write an object.
READ_ONLY_ROLES = frozenset(
    {
        "roles/storage.objectViewer",
        "roles/storage.legacyBucketReader",
        "roles/storage.legacyObjectReader",
        "roles/storage.bucketViewer",
        "roles/storage.insightsCollectorService",
        "roles/viewer",
    }
)
EVERYONE = ("allUsers", "allAuthenticatedUsers")
CHECKS = (
    "the bucket's own IAM policy: bindings naming the runner, allUsers or allAuthenticatedUsers with a role "
    "that writes objects and a condition that could hold under releases/ (grants on the project, folder or "
    "organization are not seen)"
)


@dataclasses.dataclass(frozen=True)
class Finding:
    role: str
    member: str
    condition: str  # "" when the binding has none

    def text(self) -> str:
        where = f"under the condition {self.condition!r}" if self.condition else "with no condition"
        return f"{self.member} holds {self.role} on the bucket {where}"


class NotUnderstood(ValueError):
    """A condition this check cannot read: it cannot be shown harmless."""


_TOKEN = re.compile(
    r"""\s*(?:(?P<call>resource\.name\.startsWith\((?P<name>"(?:[^"\\]|\\.)*")\))"""
    r"""|(?P<list>api\.getAttribute\(\s*"storage\.googleapis\.com/objectListPrefix"\s*,\s*(?:""|'')\s*\)\.startsWith\((?P<lp>"(?:[^"\\]|\\.)*")\))"""
    r"""|(?P<type>resource\.type\s*==\s*(?P<tv>"(?:[^"\\]|\\.)*"))"""
    r"""|(?P<op>\|\||&&|\(|\)))"""
)


def _tokens(expression: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while at < len(expression.rstrip()):
        match = _TOKEN.match(expression, at)
        if not match:
            raise NotUnderstood(f"cannot read {expression[at : at + 40]!r}")
        kind = next(k for k in ("call", "list", "type", "op") if match[k])
        value = json.loads(match["name"] or match["lp"] or match["tv"] or '""') if kind != "op" else match["op"]
        out.append((kind, value))
        at = match.end()
    return out


def may_cover(expression: str, resource_prefix: str) -> bool:
    """Whether the condition could hold for a write of some object whose resource name
    starts with `resource_prefix` (an over-approximation: `a && b` is taken as possible when
    each part is; reporting too much is the safe side). Raises NotUnderstood."""
    tokens = _tokens(expression)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise NotUnderstood(f"{expression!r} ends too early")
        position += 1
        return tokens[position - 1]

    def atom() -> bool:
        kind, value = take()
        if kind == "call":
            return resource_prefix.startswith(value) or value.startswith(resource_prefix)
        if kind == "list":  # a write has no list prefix: the attribute is "" there
            return value == ""
        if kind == "type":
            return value == "storage.googleapis.com/Object"
        if value == "(":
            inner = disjunction()
            if take() != ("op", ")"):
                raise NotUnderstood(f"unbalanced parentheses in {expression!r}")
            return inner
        raise NotUnderstood(f"unexpected {value!r} in {expression!r}")

    def conjunction() -> bool:
        result = atom()
        while peek() == ("op", "&&"):
            take()
            result = atom() and result
        return result

    def disjunction() -> bool:
        result = conjunction()
        while peek() == ("op", "||"):
            take()
            result = conjunction() or result
        return result

    result = disjunction()
    if peek() is not None:
        raise NotUnderstood(f"unexpected {peek()[1]!r} in {expression!r}")  # type: ignore[index]
    return result


def runner_writes_releases(bindings: Iterable[Mapping[str, Any]], runner: str, bucket_uri: str) -> list[Finding]:
    """The bindings of a bucket policy (version 3) that may let `runner` write under releases/."""
    releases = object_resource(bucket_uri, RELEASES)
    found = []
    for binding in bindings:
        role = str(binding.get("role", ""))
        members = [m for m in binding.get("members", ()) if m in (f"serviceAccount:{runner}", *EVERYONE)]
        if not members or role in READ_ONLY_ROLES:
            continue
        expression = str((binding.get("condition") or {}).get("expression", ""))
        try:
            covers = not expression or may_cover(expression, releases)
        except NotUnderstood:
            covers = True  # not shown harmless
        if covers:  # a role of unknown permissions (a custom one) is not known harmless either
            found += [Finding(role, member, expression) for member in members]
    return found


def read_bindings(bucket_uri: str, project: str, credentials=None) -> list[dict[str, Any]]:
    """The bucket's IAM policy bindings (version 3: with conditions). Raises google.api_core errors."""
    from google.cloud import storage  # type: ignore[attr-defined]

    name = split_bucket(bucket_uri)[0]
    client = storage.Client(project=project, credentials=credentials)
    policy = client.bucket(name).get_iam_policy(requested_policy_version=3)
    return [dict(binding) for binding in policy.bindings]


def check_runner_cannot_write_releases(settings: Settings, credentials, say: Callable[[str], None]) -> None:
    """PermissionDenied (111) when the bucket's policy lets the runner write releases/; a
    warning, and nothing refused, when the policy cannot be read."""
    from google.api_core import exceptions as gexc

    try:
        bindings = read_bindings(settings.bucket, settings.project, credentials)
    except (gexc.Forbidden, gexc.NotFound, gexc.Unauthorized) as exc:
        say(
            f"warning: could not read the IAM policy of {settings.bucket} ({exc.message}); whether the runner "
            f"{settings.service_account} can write {RELEASES} was not checked (grant the release identity "
            f"{POLICY_READER.role_id} on the bucket: invoke iam.setup)"
        )
        return
    findings = runner_writes_releases(bindings, settings.service_account, settings.bucket)
    if findings:
        raise PermissionDenied(
            f"the runner {settings.service_account} can write {RELEASES} of {settings.bucket}, so any job could "
            "replace a release's manifest:\n  - "
            + "\n  - ".join(f.text() for f in findings)
            + f"\nremove these bindings and grant the runner only what `invoke iam.setup` prints (checked: {CHECKS})"
        )


def check_object_retention(settings: Settings, credentials, say: Callable[[str], None]) -> None:
    """With release_retention_days set, the bucket must allow object retention (BadInput, 100),
    or every release would fail at its code bundle; a warning when the bucket cannot be read."""
    from google.api_core import exceptions as gexc
    from google.cloud import storage  # type: ignore[attr-defined]

    if not settings.release_retention_days:
        say(f"note: release_retention_days is 0: releases in {settings.bucket} are protected by IAM alone")
        return
    name = split_bucket(settings.bucket)[0]
    try:
        bucket = storage.Client(project=settings.project, credentials=credentials).get_bucket(name)
    except (gexc.Forbidden, gexc.NotFound, gexc.Unauthorized) as exc:
        say(f"warning: could not read gs://{name} ({exc.message}): whether it allows object retention was not checked")
        return
    if bucket.object_retention_mode != "Enabled":
        raise BadInput(
            f"release_retention_days is {settings.release_retention_days} but gs://{name} does not allow object retention: "
            "enable it (Cloud console: the bucket's Protection tab, Object retention; a new bucket: "
            "gcloud storage buckets create ... --enable-per-object-retention), or set release_retention_days: 0 "
            "to rely on IAM alone"
        )


def check_bucket(settings: Settings, credentials, say: Callable[[str], None]) -> None:
    """The release preflight's look at the bucket: the runner cannot write releases/, and the
    releases can be locked as the settings ask."""
    check_runner_cannot_write_releases(settings, credentials, say)
    check_object_retention(settings, credentials, say)
