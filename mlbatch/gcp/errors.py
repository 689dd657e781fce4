"""The one error translator for every Google API mlbatch calls (Compute Engine, Cloud Batch,
Resource Manager, Service Usage, IAM), with the one retry predicate of core.gcp_base.

Errors are told apart by reason, not by HTTP status
(https://cloud.google.com/compute/docs/troubleshooting/troubleshooting-vm-creation, and the
`errors[].reason` / google.rpc.ErrorInfo of https://cloud.google.com/apis/design/errors):
Compute answers a rate limit with 403 `rateLimitExceeded` (retried, like 429 and 5xx) and a
quota with 403 `quotaExceeded` (107, not a permission error); 400 `resourceNotReady` is
retried. Other 403s are 111 naming the permission, 404 is 101, 409 is 102, 401 is refused
credentials (111). Operation errors are translated by code: capacity (the next zone), quota, gone.
"""

from __future__ import annotations

import contextlib
import re
import urllib.error
from collections.abc import Callable, Iterator
from typing import TypeVar

from google.api_core import exceptions as gexc

from mlbatch.core.errors import AlreadyExists, CapacityError, MlbatchError, NotFound, PermissionDenied, QuotaError
from mlbatch.core.gcp_base import reasons, retry, transient

T = TypeVar("T")

QUOTA_REASONS = frozenset({"quotaExceeded", "QUOTA_EXCEEDED", "CODE_GCE_QUOTA_EXCEEDED"})
# Operation error codes that mean "this zone cannot run this instance now": try the next zone.
# UNSUPPORTED_OPERATION: the zone lacks the machine type or the GPU.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "insufficientCapacity",
        "UNSUPPORTED_OPERATION_ZONE_RESOURCE_POOL_EXHAUSTED",
        "UNSUPPORTED_OPERATION",
    }
)
GONE_CODES = frozenset({"RESOURCE_NOT_FOUND"})  # e.g. a delete whose resource another delete removed first
PERMISSION_CODES = frozenset({"PERMISSIONS_ERROR", "forbidden", "IAM_PERMISSION_DENIED"})
# How Google names a missing permission in a message: Compute's "Required 'compute.instances.create'
# permission for ...", and the "Permission 'batch.jobs.create' denied on ..." of newer APIs.
_PERMISSION_IN_MESSAGE = re.compile(r"(?:Required|Permission) '([a-z][A-Za-z0-9]*\.[A-Za-z0-9]+\.[A-Za-z0-9]+)'")


def missing_permission(exc: gexc.GoogleAPICallError) -> str:
    """The permission a 403 names (ErrorInfo metadata, else the message), or ""."""
    named = (exc.metadata or {}).get("permission", "") if isinstance(exc.metadata, dict) else ""
    if named:
        return str(named)
    match = _PERMISSION_IN_MESSAGE.search(exc.message or "")
    return match[1] if match else ""


def translate(exc: BaseException, what: str, grant: str = "") -> MlbatchError:
    """THE translation of a Google API error into the mlbatch error (and exit code) it means.
    `what` says what was being done; `grant` what to grant when a permission is missing."""
    import requests

    if isinstance(exc, MlbatchError):
        return exc
    if isinstance(exc, gexc.RetryError):  # retries ran out: the last error says why
        cause = exc.cause
        if cause is None:
            return MlbatchError(f"{what}: still failing after retries: {exc}")
        error = translate(cause, what, grant)
        return type(error)(f"{error} (still so after retries)", error.exit_code)
    if isinstance(exc, requests.RequestException | urllib.error.URLError | ConnectionError | TimeoutError):
        return MlbatchError(f"{what}: cannot reach the Google API: {type(exc).__name__}: {exc}")
    if not isinstance(exc, gexc.GoogleAPICallError):
        return MlbatchError(f"{what}: {type(exc).__name__}: {exc}")
    found = reasons(exc)
    if found & QUOTA_REASONS:
        return QuotaError(f"{what}: quota exceeded: {exc.message}")
    if isinstance(exc, gexc.Unauthorized):
        return PermissionDenied(f"{what}: Google refused the credentials: {exc.message}")
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied):
        if transient(exc):  # retries ran out on a rate limit: not a permission problem
            return MlbatchError(f"{what}: still rate-limited after retries: {exc.message}")
        permission = missing_permission(exc)
        lacks = f"the caller lacks {permission}" if permission else "permission denied"
        return PermissionDenied(f"{what}: {lacks}: {exc.message}" + (f" ({grant})" if grant else ""))
    if isinstance(exc, gexc.NotFound):
        return NotFound(f"{what}: not found: {exc.message}")
    if isinstance(exc, gexc.Conflict):
        return AlreadyExists(f"{what}: already exists: {exc.message}")
    return MlbatchError(f"{what}: {type(exc).__name__}: {exc.message}")


def operation_error(codes: list[str], message: str, what: str, where: str = "") -> MlbatchError:
    """THE translation of a finished operation's errors (by code): capacity in `where` (the
    controller tries the next zone), quota, gone, permission, or a plain failure."""
    if set(codes) & CAPACITY_CODES:
        return CapacityError(f"{where or what}: {message}")
    if set(codes) & QUOTA_REASONS:
        return QuotaError(f"{what}: {message}")
    if codes and set(codes) <= GONE_CODES:
        return NotFound(f"{what}: {message}")
    if set(codes) & PERMISSION_CODES:
        return PermissionDenied(f"{what}: {message}")
    return MlbatchError(f"{what}: {message}")


@contextlib.contextmanager
def translated(what: str, grant: str = "") -> Iterator[None]:
    """Google API errors raised in the block (a pager's later pages too) become mlbatch errors."""
    import requests

    try:
        yield
    except (gexc.GoogleAPIError, requests.RequestException) as exc:
        raise translate(exc, what, grant) from exc


def call(what: str, method: Callable[..., T], *, grant: str = "", deadline: float = 120.0, timeout: float = 60.0, **kwargs) -> T:
    """One API call with bounded retries of transient errors; any error comes back as an MlbatchError."""
    with translated(what, grant):
        return method(retry=retry(deadline), timeout=timeout, **kwargs)
