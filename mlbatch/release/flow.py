"""`invoke release --version vX.Y.Z`: every step, in order, the manifest last.

The steps are the same for every profile; a release target (mlbatch/release/targets)
says how each is done there. A failure in any step stops the release with a message
naming the step, and no manifest is written: a release exists exactly when its manifest
does. An image is served only after its tests pass; a candidate that fails is discarded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mlbatch.core import bundle
from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket, open_bucket, write_immutable
from mlbatch.core.catalog import checkout_catalog
from mlbatch.core.errors import AlreadyExists, MlbatchError, PermissionDenied, StepFailed
from mlbatch.core.manifest import CodeBundle, Manifest, VmImage
from mlbatch.core.names import image_name
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version
from mlbatch.local import base_images, infra
from mlbatch.local.base_images import BuildBase
from mlbatch.local.infra import docker_client
from mlbatch.release import bake
from mlbatch.release.targets import ReleaseTarget, get_target
from mlbatch.ui import Steps, say, spinner

GPU_FAMILY_SUFFIX = "-gpu"  # the GPU image's family: <image_family>-gpu


def git_sha(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def check_release(settings: Settings, version_text: str) -> tuple[str, Bucket, dict]:
    """Everything that can be refused before a side effect: version, Packer, catalog, not yet released."""
    version = parse_version(version_text).tag
    bake.check_packer(settings, say)
    base_images.check(settings)  # the gcp profile builds only from a base pinned by digest
    root = settings.project_root
    catalog = checkout_catalog(root)
    bundle.collect(root / "batch_code")  # a link leaving batch_code/ refuses the release here, before any side effect
    bucket = open_bucket(settings.bucket)
    if bucket.exists(manifests.manifest_key(version)):
        raise AlreadyExists(
            f"release {version} already exists ({bucket.url(manifests.manifest_key(version))}); "
            "releases are immutable: tag a new version"
        )
    return version, bucket, catalog


def retain_until(settings: Settings, now: dt.datetime | None = None) -> dt.datetime | None:
    """Until when a release's manifest and code bundle are locked (release_retention_days);
    None: not locked, the bucket's IAM alone protects them (docs/architecture.md, "Identities and trust")."""
    days = settings.release_retention_days
    return (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=days) if days else None


def upload_code(bucket: Bucket, root: Path, version: str, until: dt.datetime | None = None) -> tuple[CodeBundle, str]:
    made = bundle.build_bundle(root / "batch_code")
    data, digest = made.data, made.sha256
    key = f"batch_code/{version}/batch_code.tar.gz"
    outcome = f"uploaded {len(data)} bytes" + (f", locked until {until:%Y-%m-%d}" if until else "")
    try:
        write_immutable(bucket, key, data, until)
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


@contextlib.contextmanager
def _step(steps: Steps, version: str, name: str) -> Iterator[list[str]]:
    """A named step; any failure in it becomes StepFailed naming the step (a refused permission keeps 111)."""
    with steps.step(name) as outcome:
        try:
            yield outcome
        except (MlbatchError, OSError, subprocess.CalledProcessError) as exc:
            raise StepFailed(
                f"release {version} failed at step '{name}': {exc}",
                exc.exit_code if isinstance(exc, PermissionDenied) else None,
            ) from exc


def _discard(target: ReleaseTarget, image: VmImage) -> None:
    """Discard a failed candidate without hiding why it failed."""
    try:
        target.discard(image, say)
    except Exception as exc:  # noqa: BLE001 - the test failure is the error to report
        say(f"could not discard the candidate {image.ref} ({exc}); `invoke images.prune` will retire it")


def _image(
    steps: Steps,
    version: str,
    target: ReleaseTarget,
    root: Path,
    request: bake.BakeRequest,
    pinned: dict,
    names: tuple[str, str],
    base: BuildBase,
) -> VmImage:
    """An image's two steps: reused by input hash or baked as a candidate; then tested, and
    promoted (a failed candidate discarded). `names`: the two steps' names; `base`: what the
    containers were built FROM (the local bake's base; the gcp bake starts from its source image)."""
    with _step(steps, version, names[0]) as outcome:
        request = dataclasses.replace(request, base_image=base.ref, source=target.bake_source(base))
        image = target.find_image(bake.input_hash(root, request.source, request.gpu))
        reused = image is not None
        if image is None:
            with spinner(f"baking the {'GPU ' if request.gpu else ''}VM image with Packer + Ansible"):
                image = target.bake_image(root, request, pinned, say)
        image = dataclasses.replace(image, gpu=request.gpu)
        outcome.append(f"{'reused' if reused else 'baked'} {image.ref}")

    with _step(steps, version, names[1]) as outcome:
        try:
            with spinner("testing the image with testinfra"):
                # A reused image holds the containers of the release that baked it, not necessarily ours.
                target.test_image(root, image, {} if reused else pinned, say)
        except BaseException:
            if not reused:  # a reused image is already served by earlier releases: never discard it
                _discard(target, image)
            raise
        if not reused:
            image = dataclasses.replace(target.promote(image, say), gpu=request.gpu)
        outcome.append(f"passed; serving {image.ref}")
    return image


def release(settings: Settings, version_text: str, steps: Steps, target: ReleaseTarget | None = None) -> Manifest:
    version, bucket, catalog = check_release(settings, version_text)
    target = target or get_target(settings)
    root = settings.project_root
    sha = git_sha(root)
    request = bake.BakeRequest(
        version=version,
        git_sha=sha,
        image_name=image_name(parse_version(version).slug, family=settings.image_family),
        image_family=settings.image_family,
        base_image=settings.base_image,
        ca_bundle=settings.ca_bundle,
    )

    with _step(steps, version, "preflight") as outcome:
        target.preflight()  # before any side effect
        outcome.append(f"{target.name}: ready")

    with _step(steps, version, "containers") as outcome:
        base = infra.build_base(settings, docker_client(), say)
        pinned = target.push_containers(root, version, say, base.ref)
        outcome.append(f"pushed {', '.join(pinned)}" + ("" if base.pinned else f" (FROM the local {base.ref}, not pinned)"))

    with _step(steps, version, "code bundle") as outcome:
        code_bundle, text = upload_code(bucket, root, version, retain_until(settings))
        outcome.append(f"{text}, sha256 {code_bundle.sha256[:12]}…")

    image = _image(steps, version, target, root, request, pinned, ("vm image", "image tests"), base)
    gpu_image = None
    if any(job.gpu_count for job in catalog.values()):  # the GPU image, only for a catalog that needs it
        family = settings.image_family + GPU_FAMILY_SUFFIX
        gpu_request = dataclasses.replace(
            request, image_name=image_name(parse_version(version).slug, family=family), image_family=family, gpu=True
        )
        gpu_target = get_target(dataclasses.replace(settings, image_family=family))
        gpu_image = _image(steps, version, gpu_target, root, gpu_request, pinned, ("gpu image", "gpu image tests"), base)

    with _step(steps, version, "manifest") as outcome:
        manifest = Manifest(
            version=version,
            git_sha=sha,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            profile=settings.profile,
            vm_image=image,
            containers=pinned,
            code=code_bundle,
            jobs=catalog,
            gpu_image=gpu_image,
        )
        until = retain_until(settings)
        manifests.publish(bucket, manifest, until)
        outcome.append(f"wrote {manifests.manifest_key(version)}" + (f", locked until {until:%Y-%m-%d}" if until else ""))
    return manifest
