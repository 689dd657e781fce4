"""The release manifest: the one object that pins everything a run uses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

from mlbatch.core.bucket import Bucket, write_immutable
from mlbatch.core.catalog import Job, job_from_dict
from mlbatch.core.errors import BadInput, NotFound
from mlbatch.core.versions import EXPECTED_FORM, is_version, parse_version, sort_key

_log = logging.getLogger(__name__)

SCHEMA = 1
# What this checkout's agent does beyond a run's attempt and a task's. An image baked, or found by
# this checkout's input hash, records them (VmImage.agent_features): the hash covers the agent's
# source, so such an image has this agent. A controller asks the release before it relies on one.
SWEEP_NODES = "sweep-nodes"  # a local sweep's node takes the tasks in turn (agent/node.py)
AGENT_FEATURES = (SWEEP_NODES,)


@dataclasses.dataclass(frozen=True)
class Container:
    name: str
    repository: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclasses.dataclass(frozen=True)
class VmImage:
    name: str
    ref: str  # local profile: docker image tag; gcp: the image's self link
    input_hash: str
    baked_by_version: str  # the release that baked it (an identical bake may be reused)
    gpu: bool = False  # the GPU image (the NVIDIA driver; Secure Boot off for its VMs)
    # sha256 of the agent wheel installed in it (pip checked it; tests/image compares it with the
    # image's own record); "" in releases made before it was recorded.
    agent_wheel_sha256: str = ""
    agent_features: tuple[str, ...] = ()  # AGENT_FEATURES when released; () in releases made before

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VmImage:
        return cls(**{**data, "agent_features": tuple(data.get("agent_features", ()))})


@dataclasses.dataclass(frozen=True)
class CodeBundle:
    uri: str
    sha256: str
    size: int
    clean: bool = False  # made from a git tree with no change and no untracked file under batch_code/
    tree_state: str = ""  # why the tree was not clean (or "not a git checkout"); releases before 0.2 lack it


@dataclasses.dataclass(frozen=True)
class Manifest:
    version: str
    git_sha: str
    created: str
    profile: str
    vm_image: VmImage
    containers: dict[str, Container]
    code: CodeBundle
    jobs: dict[str, Job]
    schema: int = SCHEMA
    # The GPU image (its own family, <image_family>-gpu: the NVIDIA driver, Secure Boot off), baked
    # only when the catalog has a GPU job; None otherwise and in releases made before GPU jobs.
    gpu_image: VmImage | None = None

    def image_for(self, job: Job) -> VmImage:
        """The image a job's instances boot: the GPU image for a GPU job."""
        if job.gpu_count and self.gpu_image is None:
            raise BadInput(
                f"job {job.name} asks for GPUs and release {self.version} has no GPU image "
                "(it was released before GPU jobs): release a new version"
            )
        return self.gpu_image if job.gpu_count and self.gpu_image else self.vm_image

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"  # strict JSON

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        return cls(
            version=data["version"],
            git_sha=data["git_sha"],
            created=data["created"],
            profile=data["profile"],
            vm_image=VmImage.from_dict(data["vm_image"]),
            containers={k: Container(**v) for k, v in data["containers"].items()},
            code=CodeBundle(**data["code"]),
            jobs={k: job_from_dict(v) for k, v in data["jobs"].items()},
            schema=data.get("schema", SCHEMA),
            gpu_image=VmImage.from_dict(data["gpu_image"]) if data.get("gpu_image") else None,
        )


def manifest_key(version: str) -> str:
    return f"releases/{version}/manifest.json"


def publish(bucket: Bucket, manifest: Manifest, retain_until: dt.datetime | None = None) -> None:
    """Write the manifest once; a second write of the same version raises AlreadyExists.
    `retain_until`: locked until then (Cloud Storage object retention; no token can undo it)."""
    write_immutable(bucket, manifest_key(manifest.version), manifest.to_json().encode(), retain_until)


def load(bucket: Bucket, version: str) -> Manifest:
    parse_version(version)
    try:
        return Manifest.from_json(bucket.read(manifest_key(version)).decode())
    except NotFound:
        raise NotFound(f"release {version} does not exist in {bucket.uri} (see `invoke releases`)") from None


def list_versions(bucket: Bucket) -> list[str]:
    """Released versions, oldest first by semver precedence. A manifest under a folder that is
    not a version (written by hand, or by something else) is no release: skipped with a
    warning, so it cannot break `--version latest` or the listing for everyone."""
    versions = set()
    for key in bucket.list("releases"):
        if not key.endswith("/manifest.json"):
            continue
        parts = key.split("/")
        if len(parts) == 3 and is_version(parts[1]):
            versions.add(parts[1])
        else:
            _log.warning("mlbatch: skipped %s: %r is not a release version (%s)", bucket.url(key), parts[1], EXPECTED_FORM)
    return sorted(versions, key=sort_key)


def releases_only(versions: list[str]) -> list[str]:
    """The versions that are not pre-releases, in the same order."""
    return [v for v in versions if not parse_version(v).pre]


def newest_version(bucket: Bucket) -> str:
    """The newest release, pre-releases included (what a benchmark measures by default)."""
    versions = list_versions(bucket)
    if not versions:
        raise NotFound(f"no release in {bucket.uri}: run `invoke release --version vX.Y.Z` first")
    return versions[-1]


LATEST = "latest"


def resolve_version(bucket: Bucket, version: str) -> str:
    """`latest` -> the newest release that is not a pre-release, at the time of asking."""
    if version != LATEST:
        return parse_version(version).tag
    released = releases_only(list_versions(bucket))
    if not released:
        raise NotFound(f"--version latest: {bucket.uri} has no release that is not a pre-release (see `invoke releases`)")
    return released[-1]


def iter_manifests(bucket: Bucket) -> Iterator[Manifest]:
    for version in list_versions(bucket):
        yield load(bucket, version)
