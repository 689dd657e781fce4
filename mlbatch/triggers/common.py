"""What the exports share: the job catalog they describe and the params a trigger passes."""

from __future__ import annotations

from collections.abc import Mapping

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import open_bucket
from mlbatch.core.catalog import Job, checkout_catalog
from mlbatch.core.errors import BadInput
from mlbatch.core.settings import Settings


def load_catalog(settings: Settings, version: str | None = None) -> dict[str, Job]:
    """The catalog of a release (`latest` allowed), or of the working tree when no version is given."""
    if version:
        bucket = open_bucket(settings.bucket)
        return manifests.load(bucket, manifests.resolve_version(bucket, version)).jobs
    return checkout_catalog(settings.project_root)


def pick_job(catalog: Mapping[str, Job], name: str) -> Job:
    job = catalog.get(name)
    if job is None:
        raise BadInput(f"unknown job {name!r}: expected one of {', '.join(catalog)}")
    return job
