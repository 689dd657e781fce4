"""A model of Cloud Storage's IAM in front of fake-gcs-server: who may do what to which
object. A gate for tests/support/fault_proxy.py (FaultProxy(gate=...)). This is a model of
IAM, not IAM: it holds what the pages below say, for the requests mlbatch makes, and refuses
(501) any request it does not model rather than let it through.

- Who: the request's bearer token. A token the fake token endpoint issued for a service
  account's key (or that account's self-signed JWT), one the fake metadata server issued for
  a VM's account, or one the fake STS gave in exchange (a downscoped token: the account,
  and the Credential Access Boundary it carries). No token: the anonymous caller (401).
- What: the permission each JSON API method needs, on which resource
  (https://cloud.google.com/storage/docs/access-control/iam-json): objects.insert needs
  storage.objects.create on the object, and storage.objects.delete too when it replaces one
  (roles/storage.objectCreator "does not give permission to ... overwrite objects",
  https://cloud.google.com/iam/docs/roles-permissions/storage); compose needs create (and
  delete) on the destination and get on each source; get and media downloads need get;
  delete needs delete; patch needs update; objects.list needs storage.objects.list on the
  *bucket* (resource.name `projects/_/buckets/B`), with the list's prefix as the API
  attribute `storage.googleapis.com/objectListPrefix`; buckets.getIamPolicy needs
  storage.buckets.getIamPolicy on the bucket.
- Decision: allowed when a binding of the bucket's policy names the caller (or allUsers /
  allAuthenticatedUsers) with a role holding the permission and its condition (CEL,
  tests/support/cel.py) holds; and, for a downscoped token, when also a rule of its boundary
  names the bucket, holds the permission among its `inRole:` roles, and its availability
  condition holds (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials).
- Refusals are Storage's bodies: 403 `forbidden` "X does not have P access to the Google
  Cloud Storage object. Permission 'P' denied on resource (or it may not exist).", 401
  `required` for the anonymous caller and 401 `authError` "Invalid Credentials" for a token
  nobody issued.
- Object retention (https://cloud.google.com/storage/docs/object-lock): an object whose
  retention (set at insert or by a patch with storage.objects.setRetention) runs until a
  time in the future cannot be replaced or deleted by anyone (403 `retentionPolicyNotMet`);
  a Locked retention cannot be shortened or removed, an Unlocked one only with
  storage.objects.overrideUnlockedRetention and `overrideUnlockedRetention=true`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tests.support.cel import evaluate

# Role -> its storage permissions (https://cloud.google.com/iam/docs/roles-permissions/storage;
# only the object and bucket permissions the modelled methods need).
_OBJECTS_ALL = {
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.getIamPolicy",
    "storage.objects.list",
    "storage.objects.overrideUnlockedRetention",
    "storage.objects.setIamPolicy",
    "storage.objects.setRetention",
    "storage.objects.update",
}
ROLES: dict[str, set[str]] = {
    "roles/storage.admin": _OBJECTS_ALL | {"storage.buckets.get", "storage.buckets.getIamPolicy", "storage.buckets.setIamPolicy"},
    "roles/storage.objectAdmin": set(_OBJECTS_ALL),
    "roles/storage.objectUser": {
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.update",
    },
    "roles/storage.objectCreator": {"storage.objects.create"},
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.legacyBucketReader": {"storage.buckets.get", "storage.objects.list"},
    "roles/storage.legacyBucketWriter": {
        "storage.buckets.get",
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.list",
        "storage.objects.setRetention",
    },
}
OBJECT_TYPE, BUCKET_TYPE = "storage.googleapis.com/Object", "storage.googleapis.com/Bucket"
LIST_PREFIX = "storage.googleapis.com/objectListPrefix"


@dataclasses.dataclass(frozen=True)
class Principal:
    email: str
    boundaries: tuple[tuple[Mapping[str, Any], ...], ...] = ()  # each a boundary's rules; all must allow

    @property
    def members(self) -> set[str]:
        return {f"serviceAccount:{self.email}", "allUsers", "allAuthenticatedUsers"}


@dataclasses.dataclass(frozen=True)
class Check:
    permission: str
    resource: str  # projects/_/buckets/B[/objects/NAME]
    api: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "object" if "/objects/" in self.resource else "bucket"


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, **extra: str):
        super().__init__(message)
        self.status, self.reason, self.message, self.extra = status, reason, message, extra

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "domain": "global", "reason": self.reason, **self.extra}
        return {"error": {"code": self.status, "message": self.message, "errors": [error]}}


class BucketIam:
    """The IAM policy of the buckets behind the proxy, who holds which token, and object
    retention. `authorizes`: (Authorization header value) -> account email or None, one per
    fake token endpoint (FakeOAuth.authorizes checks its key's tokens and JWTs)."""

    def __init__(self, custom_roles: Mapping[str, Iterable[str]] | None = None):
        self.bindings: list[dict[str, Any]] = []
        self.roles = {**ROLES, **{name: set(perms) for name, perms in (custom_roles or {}).items()}}
        self._tokens: dict[str, Principal] = {}
        self._issuers: list[tuple[Callable[[str], bool], str]] = []
        self.retention: dict[str, tuple[str, dt.datetime]] = {}  # resource name -> (mode, until)
        self.object_retention = False  # whether the buckets allow object retention (a bucket setting)
        self.decisions: list[tuple[str, str, str, bool]] = []  # (account, permission, resource, allowed)
        self._lock = threading.Lock()

    # --- who ----------------------------------------------------------------------------

    def add_token(self, token: str, email: str, boundary: Iterable[Mapping[str, Any]] | None = None, on: Principal | None = None):
        boundaries = (on.boundaries if on else ()) + ((tuple(boundary),) if boundary is not None else ())
        with self._lock:
            self._tokens[token] = Principal(email, boundaries)

    def add_issuer(self, authorizes: Callable[[str], bool], email: str) -> None:
        self._issuers.append((authorizes, email))

    def principal(self, authorization: str) -> Principal | None:
        """Who a request's Authorization header is; None for no header; Refusal for a bad one."""
        if not authorization:
            return None
        kind, _, token = authorization.partition(" ")
        with self._lock:
            known = self._tokens.get(token) if kind == "Bearer" else None
        if known:
            return known
        for authorizes, email in self._issuers:
            if authorizes(authorization):
                return Principal(email)
        raise Refusal(401, "authError", "Invalid Credentials", locationType="header", location="Authorization")

    def token_principal(self, token: str) -> Principal | None:
        """The principal an access token stands for (the fake STS's subject token check)."""
        try:
            return self.principal(f"Bearer {token}")
        except Refusal:
            return None

    # --- the policy ---------------------------------------------------------------------

    def grant(self, role: str, member: str, expression: str = "") -> None:
        if role not in self.roles:
            raise ValueError(f"role {role} is not modelled")
        binding: dict[str, Any] = {"role": role, "members": [member]}
        if expression:
            evaluate(expression, {"name": "", "type": OBJECT_TYPE, "service": "storage.googleapis.com"}, {})  # parses
            binding["condition"] = {"title": f"condition {len(self.bindings)}", "expression": expression}
        self.bindings.append(binding)

    def policy(self, bucket: str) -> dict[str, Any]:
        """buckets.getIamPolicy's answer, version 3 (https://cloud.google.com/storage/docs/json_api/v1/buckets/getIamPolicy)."""
        return {
            "kind": "storage#policy",
            "resourceId": f"projects/_/buckets/{bucket}",
            "version": 3,
            "etag": "CAE=",
            "bindings": json.loads(json.dumps(self.bindings)),
        }

    def _holds(self, expression: str, check: Check) -> bool:
        resource = {"name": check.resource, "type": OBJECT_TYPE if check.kind == "object" else BUCKET_TYPE}
        return evaluate(expression, {**resource, "service": "storage.googleapis.com"}, check.api)

    def allows(self, who: Principal, check: Check) -> bool:
        granted = any(
            check.permission in self.roles[b["role"]]
            and who.members & set(b["members"])
            and (not b.get("condition") or self._holds(b["condition"]["expression"], check))
            for b in self.bindings
        )
        bucket = "//storage.googleapis.com/" + check.resource.split("/objects/", 1)[0]
        for rules in who.boundaries:
            granted = granted and any(
                rule["availableResource"] == bucket
                and any(
                    check.permission in self.roles.get(p.removeprefix("inRole:"), set()) for p in rule["availablePermissions"]
                )
                and (not rule.get("availabilityCondition") or self._holds(rule["availabilityCondition"]["expression"], check))
                for rule in rules
            )
        self.decisions.append((who.email, check.permission, check.resource, granted))
        return granted

    def require(self, who: Principal | None, checks: Iterable[Check]) -> None:
        for check in checks:
            if who is None:
                raise Refusal(
                    401,
                    "required",
                    f"Anonymous caller does not have {check.permission} access to the Google Cloud Storage "
                    f"{check.kind}. Permission '{check.permission}' denied on resource (or it may not exist).",
                    locationType="header",
                    location="Authorization",
                )
            if not self.allows(who, check):
                raise Refusal(
                    403,
                    "forbidden",
                    f"{who.email} does not have {check.permission} access to the Google Cloud Storage {check.kind}. "
                    f"Permission '{check.permission}' denied on resource (or it may not exist).",
                )

    # --- retention ----------------------------------------------------------------------

    def retained(self, resource: str) -> bool:
        held = self.retention.get(resource)
        return held is not None and held[1] > dt.datetime.now(dt.UTC)

    def _set_retention(self, resource: str, retention: Any, override: bool) -> list[Check]:
        """The checks a retention change needs; refuses what no one may do."""
        checks = [Check("storage.objects.setRetention", resource)]
        held = self.retention.get(resource)
        if held and self.retained(resource):
            mode, until = held
            removed = not retention or not retention.get("retainUntilTime")  # a patch of nulls removes it
            shorter = removed or _until(retention) < until or retention.get("mode") != mode
            if shorter and mode == "Locked":
                raise Refusal(
                    403, "forbidden", f"Object retention for '{resource}' is Locked and cannot be shortened or removed."
                )
            if shorter:
                if not override:
                    raise Refusal(400, "invalid", "overrideUnlockedRetention must be true to shorten an Unlocked retention.")
                checks.append(Check("storage.objects.overrideUnlockedRetention", resource))
        return checks

    def record_retention(self, resource: str, retention: Any) -> None:
        if retention and retention.get("retainUntilTime"):
            self.retention[resource] = (retention.get("mode", "Unlocked"), _until(retention))
        else:
            self.retention.pop(resource, None)

    # --- requests -----------------------------------------------------------------------

    def checks(self, method: str, path: str, body: bytes, exists: Callable[[str, str], bool]) -> list[Check] | None:
        """The permissions a JSON API request needs; None for the requests that need none
        here (the chunks of an upload session its start was checked for)."""
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        route = urllib.parse.unquote(url.path)
        if route.startswith("/upload/") and query.get("upload_id"):
            return None
        if m := re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", route):
            name = query.get("name") or _json_name(body)
            return self._writes(m[1], name, exists, _json_field(body, "retention"))
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)/compose", route):
            sources = [s["name"] for s in json.loads(body or b"{}").get("sourceObjects", [])]
            reads = [Check("storage.objects.get", _object(m[1], s)) for s in sources]
            return reads + self._writes(m[1], m[2], exists, None)
        if m := re.fullmatch(r"/(?:download/)?storage/v1/b/([^/]+)/o/(.+)", route):
            resource = _object(m[1], m[2])
            if method == "GET":
                return [Check("storage.objects.get", resource)]
            if method == "DELETE":
                if self.retained(resource):
                    raise _retained(resource)
                return [Check("storage.objects.delete", resource)]
            if method in ("PATCH", "PUT"):
                changes = json.loads(body or b"{}")
                checks = [Check("storage.objects.update", resource)]
                if "retention" in changes:
                    override = query.get("overrideUnlockedRetention") == "true"
                    checks += self._set_retention(resource, changes["retention"], override)
                return checks
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/o", route):
            if method == "GET":
                return [Check("storage.objects.list", f"projects/_/buckets/{m[1]}", {LIST_PREFIX: query.get("prefix", "")})]
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/iam", route):
            if method == "GET":
                return [Check("storage.buckets.getIamPolicy", f"projects/_/buckets/{m[1]}")]
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)", route):
            if method == "GET":
                return [Check("storage.buckets.get", f"projects/_/buckets/{m[1]}")]
        raise Refusal(501, "notImplemented", f"the IAM model of the bucket does not model {method} {route}")

    def _writes(self, bucket: str, name: str, exists: Callable[[str, str], bool], retention: Any) -> list[Check]:
        resource = _object(bucket, name)
        if retention and not self.object_retention:
            raise Refusal(400, "invalid", f"Object retention is not enabled on bucket {bucket}: cannot set a retention on {name}")
        checks = [Check("storage.objects.create", resource)]
        if exists(bucket, name):
            if self.retained(resource):
                raise _retained(resource)
            checks.append(Check("storage.objects.delete", resource))  # a replacement deletes what was there
        if retention:
            checks.append(Check("storage.objects.setRetention", resource))
        return checks


def _until(retention: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(retention["retainUntilTime"]).replace("Z", "+00:00"))


def _retained(resource: str) -> Refusal:
    return Refusal(
        403,
        "retentionPolicyNotMet",
        f"Object '{resource.split('/buckets/', 1)[1].replace('/objects/', '/', 1)}' is subject to object retention "
        "and cannot be deleted or overwritten until its retain-until time",
    )


def _object(bucket: str, name: str) -> str:
    return f"projects/_/buckets/{bucket}/objects/{name}"


def _json_field(body: bytes, key: str) -> Any:
    """A field of the JSON metadata an upload carries (multipart's first part, or a resumable start's body)."""
    start = body.find(b"{")
    if start < 0:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))
    except ValueError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def _json_name(body: bytes) -> str:
    return str(_json_field(body, "name") or "")


class IamGate:
    """What FaultProxy asks about each request: `before` answers a refusal (or the bucket's
    policy) instead of forwarding, or None to forward; `after` learns what a write set."""

    def __init__(self, iam: BucketIam, upstream: str):
        self.iam = iam
        self.upstream = upstream.rstrip("/")

    def _exists(self, bucket: str, name: str) -> bool:
        url = f"{self.upstream}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
        try:
            urllib.request.urlopen(url, timeout=30).close()  # noqa: S310 - the loopback emulator
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def before(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]] | None:
        try:
            who = self.iam.principal(headers.get("Authorization", ""))
            checks = self.iam.checks(method, path, body, self._exists)
            if checks is None:
                return None
            self.iam.require(who, checks)
        except Refusal as refusal:
            return refusal.status, refusal.body()
        route = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/iam", route):  # fake-gcs-server has no IAM
            return 200, self.iam.policy(m[1])
        if (m := re.fullmatch(r"/storage/v1/b/([^/]+)", route)) and method == "GET" and self.iam.object_retention:
            with urllib.request.urlopen(f"{self.upstream}/storage/v1/b/{m[1]}", timeout=30) as answer:  # noqa: S310
                bucket = json.loads(answer.read())
            return 200, {**bucket, "objectRetention": {"mode": "Enabled"}}  # fake-gcs-server has no object retention
        return None

    def after(self, method: str, path: str, body: bytes, status: int) -> None:
        if status != 200:
            return
        url = urllib.parse.urlsplit(path)
        route, query = urllib.parse.unquote(url.path), dict(urllib.parse.parse_qsl(url.query))
        if (m := re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", route)) and not query.get("upload_id"):
            retention = _json_field(body, "retention")
            if retention:
                self.iam.record_retention(_object(m[1], query.get("name") or _json_name(body)), retention)
        elif (
            (m := re.fullmatch(r"/storage/v1/b/([^/]+)/o/(.+)", route)) and method in ("PATCH", "PUT") and "/compose" not in route
        ):
            changes = json.loads(body or b"{}")
            if "retention" in changes:
                self.iam.record_retention(_object(m[1], m[2]), changes["retention"])
