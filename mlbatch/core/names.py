"""GCE-safe names and labels, run ids and instance names (docs/architecture.md, "Runs")."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string

from mlbatch.core.errors import BadInput

GCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

# Everything mlbatch creates (instances, job and registry containers, images) carries this
# label; gc, the providers' list_ours and `local.down` select on it and on nothing else.
MANAGED_LABEL_KEY = "managed-by"
MANAGED_LABEL_VALUE = "mlbatch"
MANAGED_LABEL = f"{MANAGED_LABEL_KEY}={MANAGED_LABEL_VALUE}"  # Docker's label filter form

# An Artifact Registry repository as a registry path (REGION-docker.pkg.dev/PROJECT/REPOSITORY).
_ARTIFACT_REGISTRY = re.compile(
    r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[a-z0-9-]+)/(?P<repository>[a-z0-9._-]+)$"
)

# A job name must leave room for "mlb-", the run id suffix and the attempt in 63 chars.
MAX_JOB_NAME = 30
_RUN_ID = re.compile(r"^(?P<job>[a-z]([-a-z0-9]*[a-z0-9])?)-(?P<ts>\d{8}-\d{6})-(?P<rand>[a-z0-9]{4})$", re.ASCII)


def check_gce_name(name: str, what: str = "name") -> str:
    if not GCE_NAME.fullmatch(name):
        raise BadInput(
            f"invalid {what} {name!r}: expected lowercase letters, digits and dashes, "
            "starting with a letter, at most 63 characters ([a-z]([-a-z0-9]{0,61}[a-z0-9])?)"
        )
    return name


def check_job_name(name: str) -> str:
    check_gce_name(name, "job name")
    if len(name) > MAX_JOB_NAME:
        raise BadInput(f"invalid job name {name!r}: at most {MAX_JOB_NAME} characters")
    return name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
            raise BadInput(f"invalid label {key}={value!r}: lowercase [a-z0-9_-], at most 63 characters")
    return labels


def managed_labels() -> dict[str, str]:
    return {MANAGED_LABEL_KEY: MANAGED_LABEL_VALUE}


def is_managed(labels: dict[str, str]) -> bool:
    return labels.get(MANAGED_LABEL_KEY) == MANAGED_LABEL_VALUE


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")


def image_name(version_slug: str, now: dt.datetime | None = None, family: str = "mlbatch") -> str:
    return check_gce_name(f"{family}-{version_slug}-{utc_stamp(now)}", "image name")


def new_run_id(job: str, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    rand = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{check_job_name(job)}-{stamp}-{rand}"


def job_of_run_id(run_id: str) -> str:
    match = _RUN_ID.fullmatch(run_id)
    if not match:
        raise BadInput(f"invalid run id {run_id!r}: expected <job>-<YYYYMMDD-hhmmss>-<4 characters>")
    return match["job"]


def instance_name(run_id: str, attempt: int) -> str:
    return check_gce_name(f"mlb-{run_id}-{attempt}", "instance name")


def artifact_repository(registry: str) -> tuple[str, str, str] | None:
    """(location, project, repository) of an Artifact Registry registry path; None for any
    other registry (gcr.io, a local one)."""
    match = _ARTIFACT_REGISTRY.fullmatch(registry)
    return (match["location"], match["project"], match["repository"]) if match else None
