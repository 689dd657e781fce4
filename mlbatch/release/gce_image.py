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
import uuid
from pathlib import Path
from typing import Any

from mlbatch import ui
from mlbatch.core.errors import AlreadyExists, BadInput, MlbatchError, NotFound
from mlbatch.core.manifest import AGENT_FEATURES, Container, VmImage
from mlbatch.core.names import GCE_NAME, is_managed
from mlbatch.core.settings import Settings, bake_zone
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients
from mlbatch.gcp.network import vpc
from mlbatch.gcp.operations import Waiter
from mlbatch.release.bake import BakeRequest, BakeSource, run_packer, too_old
from mlbatch.release.targets.base import BakedImage
from mlbatch.ui import Say

CANDIDATE_SUFFIX = "-candidate"
LABEL_VALUE_MAX = 63  # the input-hash label holds the first 63 hex digits of the sha256
GRANT = "grant roles/compute.storageAdmin on the project"


def candidate_family(settings: Settings) -> str:
    return settings.image_family + CANDIDATE_SUFFIX


class Images:
    """The project's images through one ImagesClient: every call retried on transient errors and
    translated, every mutation waited out by the one waiter (an image copy takes minutes)."""

    api_deadline = 120.0  # seconds a call may spend on transient-error retries
    operation_bound = 1800.0  # the longest an image operation is waited for

    def __init__(self, settings: Settings, say: Say | None = None, clients: Clients | None = None):
        self.settings, self.project, self.say = settings, settings.project, say
        clients = clients or Clients(settings)
        self.client = clients.compute("ImagesClient")
        self.waiter = Waiter(clients, settings.project)

    def _call(self, what: str, method, **kwargs):
        return errors.call(what, method, grant=GRANT, deadline=self.api_deadline, **kwargs)

    def _done(self, op: Any, what: str) -> None:
        self.waiter.wait(op, what, bound=self.operation_bound, say=self.say)

    def get(self, name: str, what: str) -> Any:
        return self._call(what, self.client.get, project=self.project, image=name)

    def from_family(self, project: str, family: str, what: str) -> Any:
        """The newest image of a family, of any project (a public one: debian-cloud)."""
        return self._call(what, self.client.get_from_family, project=project, family=family)

    def list(self, filter_: str, what: str) -> list[Any]:
        from google.cloud import compute_v1

        request = compute_v1.ListImagesRequest(project=self.project, filter=filter_, max_results=50)
        with errors.translated(what, GRANT):  # the pager follows nextPageToken: later pages too
            return list(self._call(what, self.client.list, request=request))

    def insert(self, image: Any, what: str) -> None:
        """Create `image` and wait until it is READY; AlreadyExists when the name is taken."""
        from google.cloud import compute_v1

        request = compute_v1.InsertImageRequest(project=self.project, image_resource=image, request_id=str(uuid.uuid4()))
        self._done(self._call(what, self.client.insert_unary, request=request), what)

    def deprecate(self, name: str) -> None:
        from google.cloud import compute_v1

        what = f"deprecating image {name}"
        status = compute_v1.DeprecationStatus(state="DEPRECATED")
        request = compute_v1.DeprecateImageRequest(
            project=self.project, image=name, deprecation_status_resource=status, request_id=str(uuid.uuid4())
        )
        self._done(self._call(what, self.client.deprecate_unary, request=request), what)

    def delete(self, name: str) -> None:
        """Delete and wait until it is gone; an image already gone is fine."""
        from google.cloud import compute_v1

        what = f"deleting image {name}"
        request = compute_v1.DeleteImageRequest(project=self.project, image=name, request_id=str(uuid.uuid4()))
        try:
            self._done(self._call(what, self.client.delete_unary, request=request), what)
        except NotFound:
            return


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
        agent_features=AGENT_FEATURES,  # found or baked by this checkout's input hash: this agent
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
    project, family = settings.source_image_project, settings.source_image_family
    found = Images(settings).from_family(project, family, f"resolving the source image {project}/{family}")
    uefi = any(feature.type_ == "UEFI_COMPATIBLE" for feature in found.guest_os_features)
    return SourceImage(found.name, found.self_link, uefi)


def bake_source(settings: Settings) -> BakeSource:
    return BakeSource.of(source_image(settings).self_link, settings.ca_bundle)


def find_image(settings: Settings, input_hash: str) -> VmImage | None:
    """A served image (family image_family) baked from the same inputs: READY, not deprecated, ours,
    and younger than max_image_age_days."""
    label = input_hash[:LABEL_VALUE_MAX]
    found = Images(settings).list(f'labels.input-hash = "{label}"', "looking for an image with the same inputs")
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


def baked_images(settings: Settings, filter_: str) -> list[BakedImage]:
    """Images for retention, oldest first, each with its deprecation state when it has one."""
    found = [
        BakedImage(
            name=image.name,
            ref=image.self_link,
            created=image.creation_timestamp,
            status=image.deprecated.state if image.deprecated.state else image.status,
        )
        for image in Images(settings).list(filter_, "listing images")
    ]
    return sorted(found, key=lambda i: (i.created, i.name))


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
        # Paths in the project that owns them (a Shared VPC host): Packer takes a value with a "/" as is.
        "network": vpc(settings).network,
        "subnetwork": vpc(settings).subnetwork,
        "service_account_email": settings.service_account,
        "use_iap": json.dumps(settings.use_iap),  # false: the build VM's internal address (the template says why)
        "use_os_login": json.dumps(settings.os_login),
        "ssh_port": str(settings.ssh_port),
        "prepull_images": json.dumps(sorted(c.ref for c in containers.values())),
    }


def bake(settings: Settings, root: Path, request: BakeRequest, containers: dict[str, Container], say: Say) -> VmImage:
    """`packer build -only=googlecompute.vm` into the candidate family; returns the candidate."""
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
    )
    artifact = baked.build["artifact_id"]
    image = Images(settings).get(artifact, f"reading the baked image {artifact}")
    return _vm_image(image, baked.input_hash)


def _candidate(settings: Settings, images: Images, image: VmImage) -> Any:
    """The candidate as the API has it; refuse anything that is not one of our candidates."""
    found = images.get(image.name, f"reading the candidate image {image.name}")
    if found.family != candidate_family(settings) or not is_managed(dict(found.labels)):
        raise BadInput(
            f"image {image.name} is in family {found.family!r}, not the candidate family {candidate_family(settings)!r} "
            "of an mlbatch bake: refusing to promote or discard it"
        )
    return found


def promote(settings: Settings, image: VmImage, say: Say) -> VmImage:
    """The tested candidate becomes the served image: a copy in image_family, then the candidate goes."""
    from google.cloud import compute_v1

    images = Images(settings, say)
    found = _candidate(settings, images, image)
    name = image.name.removesuffix(CANDIDATE_SUFFIX)
    served = compute_v1.Image(
        name=name,
        family=settings.image_family,
        source_image=found.self_link,
        labels=dict(found.labels),
        description=found.description,
    )
    say(f"promoting {image.name} to {name} in family {settings.image_family} (an image copy takes minutes)")
    try:
        images.insert(served, f"promoting {image.name}")
    except AlreadyExists:  # promoted by an earlier attempt that failed before the candidate was deleted
        pass
    result = images.get(name, f"reading the promoted image {name}")
    if result.family != settings.image_family or result.labels.get("input-hash") != found.labels.get("input-hash"):
        raise MlbatchError(f"image {name} exists but is not the promoted {image.name}: refusing to serve it")
    images.delete(image.name)
    return dataclasses.replace(image, name=name, ref=result.self_link)


def discard(settings: Settings, image: VmImage, say: Say) -> None:
    """A candidate whose tests failed is deleted: nothing that looks released remains."""
    images = Images(settings, say)
    try:
        _candidate(settings, images, image)
    except NotFound:
        return  # already gone
    say(f"discarding {image.name}")
    images.delete(image.name)
