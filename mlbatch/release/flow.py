"""`invoke release --version vX.Y.Z`: every step, in order, the manifest last.

A failure in any step stops the release with a message naming the step, and no
manifest is written: a release exists exactly when its manifest does.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from mlbatch.core import bundle
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket, open_bucket
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.errors import AlreadyExists, BadInput, MlbatchError, StepFailed
from mlbatch.core.manifest import CodeBundle, Manifest
from mlbatch.core.names import image_name
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version
from mlbatch.release import bake, containers, imagetest
from mlbatch.ui import Steps, say, spinner


def git_sha(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def check_release(settings: Settings, version_text: str) -> tuple[str, Bucket, dict]:
    """Everything that can be refused before a side effect: version, catalog, not yet released."""
    version = parse_version(version_text).tag
    root = settings.project_root
    catalog = parse_catalog(
        (root / "batch_code" / "jobs.yaml").read_text(), containers=set(containers.container_names(root / "containers"))
    )
    bundle.collect(root / "batch_code")  # a link leaving batch_code/ refuses the release here, before any side effect
    bucket = open_bucket(settings.bucket)
    if bucket.exists(manifests.manifest_key(version)):
        raise AlreadyExists(
            f"release {version} already exists ({bucket.url(manifests.manifest_key(version))}); "
            "releases are immutable: tag a new version"
        )
    return version, bucket, catalog


def upload_code(bucket: Bucket, root: Path, version: str) -> tuple[CodeBundle, str]:
    made = bundle.build_bundle(root / "batch_code")
    data, digest = made.data, made.sha256
    key = f"batch_code/{version}/batch_code.tar.gz"
    outcome = f"uploaded {len(data)} bytes"
    try:
        bucket.write(key, data, immutable=True)
    except AlreadyExists:
        # Left by an earlier attempt at this release that failed later on: fine if identical.
        if bundle.sha256(bucket.read(key)) != digest:
            raise AlreadyExists(f"{bucket.url(key)} exists with other contents; releases are immutable") from None
        outcome = "already uploaded, identical"
    stored = bundle.sha256(bucket.read(key))
    if stored != digest:
        raise MlbatchError(f"{bucket.url(key)} reads back as sha256 {stored}, expected {digest}")
    code = CodeBundle(uri=bucket.url(key), sha256=digest, size=len(data), clean=made.clean, tree_state=made.tree_state)
    return code, outcome


def release(settings: Settings, version_text: str, steps: Steps) -> Manifest:
    version, bucket, catalog = check_release(settings, version_text)
    if not settings.is_local:
        raise BadInput(
            "the gcp release (Artifact Registry push, googlecompute bake) is not implemented yet; use the local profile"
        )
    from mlbatch.local.infra import docker_client

    root = settings.project_root
    client = docker_client()
    sha = git_sha(root)

    def run(name, fn):
        with steps.step(name) as outcome:
            try:
                return fn(outcome)
            except (MlbatchError, OSError, subprocess.CalledProcessError) as exc:
                raise StepFailed(f"release {version} failed at step '{name}': {exc}") from exc

    def build_containers(outcome):
        pinned = containers.build_and_push(client, root / "containers", settings.registry, version, say)
        outcome.append(f"pushed {', '.join(pinned)}")
        return pinned

    def code(outcome):
        code_bundle, text = upload_code(bucket, root, version)
        outcome.append(f"{text}, sha256 {code_bundle.sha256[:12]}…")
        return code_bundle

    def bake_image(outcome):
        request = bake.BakeRequest(
            version=version,
            git_sha=sha,
            image_name=image_name(parse_version(version).slug, family=settings.image_family),
            image_family=settings.image_family,
            base_image=settings.base_image,
            ca_bundle=settings.ca_bundle,
        )
        with spinner("baking the VM image with Packer + Ansible"):
            image, reused = bake.bake_local(client, root, request, say)
        outcome.append(f"{'reused' if reused else 'baked'} {image.ref}")
        return image

    def test_image(outcome):
        with spinner("testing the image with testinfra"):
            imagetest.test_local_image(client, root, image.ref, image.baked_by_version)
        outcome.append("passed")

    pinned = run("containers", build_containers)
    code_bundle = run("code bundle", code)
    image = run("vm image", bake_image)
    run("image tests", test_image)

    def publish(outcome):
        manifest = Manifest(
            version=version,
            git_sha=sha,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            profile=settings.profile,
            vm_image=image,
            containers=pinned,
            code=code_bundle,
            jobs=catalog,
        )
        manifests.publish(bucket, manifest)
        outcome.append(f"wrote {manifests.manifest_key(version)}")
        return manifest

    return run("manifest", publish)
