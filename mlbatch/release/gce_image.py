"""The GCE VM image: baked by Packer's googlecompute source into a candidate family, then
promoted into the served family once its tests pass, or discarded.

Only a tested image is ever served: a bake lands in `<image_family>-candidate` under the
name `<image name>-candidate`; `promote` copies it into `image_family` under the image
name and deletes the candidate; `discard` deletes it. An image in the served family with
the same input hash (packer/, ansible/, the agent) is reused instead of baking again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from pathlib import Path

from mlbatch import ui
from mlbatch.core.errors import BadInput, MlbatchError, NotFound
from mlbatch.core.manifest import Container, VmImage
from mlbatch.core.names import GCE_NAME, is_managed
from mlbatch.core.settings import Settings, bake_zone
from mlbatch.release import adc
from mlbatch.release.bake import BakeRequest, BakeSource, run_packer, too_old
from mlbatch.ui import Say

CANDIDATE_SUFFIX = "-candidate"
LABEL_VALUE_MAX = 63  # the input-hash label holds the first 63 hex digits of the sha256
OPERATION_TIMEOUT = 900.0  # an image insert takes minutes on GCE


def candidate_family(settings: Settings) -> str:
    return settings.image_family + CANDIDATE_SUFFIX


def _clients(settings: Settings):
    from google.cloud import compute_v1

    kwargs: dict = {"transport": "rest"}
    if settings.compute_endpoint:  # the fake Compute API (settings refuse it outside the test profile)
        from google.auth.credentials import AnonymousCredentials

        kwargs.update(client_options={"api_endpoint": settings.compute_endpoint}, credentials=AnonymousCredentials())
    return compute_v1.ImagesClient(**kwargs), compute_v1.GlobalOperationsClient(**kwargs)


def _version_of(description: str) -> str:
    """`mlbatch <version> <git sha>`, as packer/mlbatch.pkr.hcl writes the image description."""
    words = description.split()
    return words[1] if len(words) >= 2 and words[0] == "mlbatch" else ""


_WHEEL = re.compile(r"\bagent-wheel-sha256:([0-9a-f]{64})\b")


def _vm_image(image, input_hash: str) -> VmImage:
    wheel = _WHEEL.search(image.description or "")  # the template writes it there: a label holds 63 characters
    return VmImage(
        name=image.name,
        ref=image.self_link,
        input_hash=input_hash,
        baked_by_version=_version_of(image.description),
        agent_wheel_sha256=wheel[1] if wheel else "",
    )


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """The image the bake starts from: the family's newest, resolved once so that the bake uses
    exactly the image the input hash names."""

    name: str
    self_link: str
    uefi: bool  # UEFI_COMPATIBLE: the build VM may boot as a Shielded VM (Secure Boot needs it)


def source_image(settings: Settings) -> SourceImage:
    """images.getFromFamily of the profile's source family (debian-cloud/debian-12)."""
    from google.api_core import exceptions as gexc

    images, _ = _clients(settings)
    try:
        found = images.get_from_family(project=settings.source_image_project, family=settings.source_image_family)
    except gexc.GoogleAPICallError as exc:
        raise _api_error(
            exc, f"resolving the source image {settings.source_image_project}/{settings.source_image_family}"
        ) from exc
    uefi = any(feature.type_ == "UEFI_COMPATIBLE" for feature in found.guest_os_features)
    return SourceImage(found.name, found.self_link, uefi)


def bake_source(settings: Settings) -> BakeSource:
    return BakeSource.of(source_image(settings).self_link, settings.ca_bundle)


def _wait(settings: Settings, operations, operation: str, what: str, say: Say) -> None:
    from google.cloud import compute_v1

    deadline = time.monotonic() + OPERATION_TIMEOUT
    started = time.monotonic()
    while True:
        op = operations.wait(project=settings.project, operation=operation, timeout=60)
        if op.status == compute_v1.Operation.Status.DONE:
            break
        if time.monotonic() > deadline:
            raise MlbatchError(f"{what}: operation {operation} not done after {OPERATION_TIMEOUT:.0f}s")
        say(f"{what}: waiting ({time.monotonic() - started:.0f}s)")
    if op.error and op.error.errors:
        raise MlbatchError(f"{what}: " + "; ".join(f"{e.code}: {e.message}" for e in op.error.errors))


def _api_error(exc, what: str) -> MlbatchError:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return NotFound(f"{what}: not found: {exc.message}")
    return MlbatchError(f"{what}: {type(exc).__name__}: {exc.message}")


def find_image(settings: Settings, input_hash: str) -> VmImage | None:
    """A served image (family image_family) baked from the same inputs: READY, not deprecated, ours,
    and younger than max_image_age_days."""
    from google.api_core import exceptions as gexc

    images, _ = _clients(settings)
    label = input_hash[:LABEL_VALUE_MAX]
    try:
        found = list(images.list(request={"project": settings.project, "filter": f'labels.input-hash = "{label}"'}))
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, "looking for an image with the same inputs") from exc
    usable = [
        image
        for image in found
        if is_managed(dict(image.labels))
        and image.labels.get("input-hash") == label
        and image.family == settings.image_family
        and image.status == "READY"
        and (not image.deprecated or image.deprecated.state in ("", "ACTIVE"))
    ]
    if not usable:
        return None
    newest = max(usable, key=lambda i: i.creation_timestamp)
    if too_old(newest.creation_timestamp, settings.max_image_age_days, newest.name, ui.say):
        return None
    return _vm_image(newest, input_hash)


def registry_token() -> str:
    """An access token of the Application Default Credentials: the pre-pull's registry login
    (Artifact Registry takes it as user oauth2accesstoken)."""
    return adc.credentials().token


def packer_variables(
    settings: Settings, request: BakeRequest, containers: dict[str, Container], source: SourceImage | None = None
) -> dict[str, str]:
    """What the googlecompute source needs beyond the variables both sources share; `source`: the
    resolved source image (the bake starts from exactly it, as a Shielded VM when it is UEFI-compatible)."""
    return {
        "project_id": settings.project,
        "zone": bake_zone(settings),
        "source_image_family": settings.source_image_family,
        "source_image": source.name if source else "",
        "shielded_vm": json.dumps(source.uefi if source else True),
        "source_image_project": settings.source_image_project,
        "machine_type": settings.bake_machine_type,
        "network": settings.network,
        "subnetwork": settings.subnetwork,
        "service_account_email": settings.service_account,
        "use_iap": json.dumps(settings.use_iap),  # false: the build VM's internal address (the template says why)
        "use_os_login": json.dumps(settings.os_login),
        "ssh_port": str(settings.ssh_port),
        "prepull_images": json.dumps(sorted(c.ref for c in containers.values())),
    }


def bake(settings: Settings, root: Path, request: BakeRequest, containers: dict[str, Container], say: Say) -> VmImage:
    """`packer build -only=googlecompute.vm` into the candidate family; returns the candidate."""
    from google.api_core import exceptions as gexc

    name = request.image_name + CANDIDATE_SUFFIX
    if not GCE_NAME.match(name):
        raise BadInput(f"image name {request.image_name!r} is too long for its candidate {name!r}: at most 63 characters")
    source = source_image(settings)
    if request.source is not None and request.source.image != source.self_link:
        raise MlbatchError(
            f"the source image of {settings.source_image_project}/{settings.source_image_family} changed during the release "
            f"({request.source.image} -> {source.self_link}): release again"
        )
    candidate = dataclasses.replace(request, image_name=name, image_family=candidate_family(settings))
    shielded = "as a Shielded VM" if source.uefi else "NOT as a Shielded VM (the source image is not UEFI-compatible)"
    say(f"baking {name} in {bake_zone(settings)} from {source.self_link}, {shielded}")
    baked = run_packer(
        root,
        candidate,
        "googlecompute.vm",
        say,
        extra_vars=packer_variables(settings, request, containers, source),
        extra_env={"PKR_VAR_prepull_registry_token": registry_token()},
    )
    images, _ = _clients(settings)
    try:
        image = images.get(project=settings.project, image=baked.build["artifact_id"])
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, f"reading the baked image {baked.build['artifact_id']}") from exc
    return _vm_image(image, baked.input_hash)


def _candidate(settings: Settings, images, image: VmImage):
    """The candidate as the API has it; refuse anything that is not one of our candidates."""
    from google.api_core import exceptions as gexc

    try:
        found = images.get(project=settings.project, image=image.name)
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, f"reading the candidate image {image.name}") from exc
    if found.family != candidate_family(settings) or not is_managed(dict(found.labels)):
        raise BadInput(
            f"image {image.name} is in family {found.family!r}, not the candidate family {candidate_family(settings)!r} "
            "of an mlbatch bake: refusing to promote or discard it"
        )
    return found


def promote(settings: Settings, image: VmImage, say: Say) -> VmImage:
    """The tested candidate becomes the served image: a copy in image_family, then the candidate goes."""
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    images, operations = _clients(settings)
    found = _candidate(settings, images, image)
    name = image.name.removesuffix(CANDIDATE_SUFFIX)
    served = compute_v1.Image(
        name=name,
        family=settings.image_family,
        source_image=found.self_link,
        labels=dict(found.labels),
        description=found.description,
    )
    say(f"promoting {image.name} to {name} in family {settings.image_family}")
    try:
        op = images.insert(
            request=compute_v1.InsertImageRequest(project=settings.project, image_resource=served, request_id=str(uuid.uuid4()))
        )
        _wait(settings, operations, op.name, f"promoting {image.name}", say)
    except gexc.Conflict:  # promoted by an earlier attempt that failed before the candidate was deleted
        pass
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, f"promoting {image.name}") from exc
    try:
        result = images.get(project=settings.project, image=name)
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, f"reading the promoted image {name}") from exc
    if result.family != settings.image_family or result.labels.get("input-hash") != found.labels.get("input-hash"):
        raise MlbatchError(f"image {name} exists but is not the promoted {image.name}: refusing to serve it")
    _delete(settings, images, operations, image.name, say)
    return dataclasses.replace(image, name=name, ref=result.self_link)


def discard(settings: Settings, image: VmImage, say: Say) -> None:
    """A candidate whose tests failed is deleted: nothing that looks released remains."""
    images, operations = _clients(settings)
    try:
        _candidate(settings, images, image)
    except NotFound:
        return  # already gone
    say(f"discarding {image.name}")
    _delete(settings, images, operations, image.name, say)


def _delete(settings: Settings, images, operations, name: str, say: Say) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    try:
        op = images.delete(
            request=compute_v1.DeleteImageRequest(project=settings.project, image=name, request_id=str(uuid.uuid4()))
        )
        _wait(settings, operations, op.name, f"deleting {name}", say)
    except gexc.NotFound:
        return
    except gexc.GoogleAPICallError as exc:
        raise _api_error(exc, f"deleting {name}") from exc
