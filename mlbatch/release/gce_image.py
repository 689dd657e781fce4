"""The GCE VM image: baked by Packer's googlecompute source into a candidate family, then
promoted into the served family once its tests pass, or discarded.

Only a tested image is ever served: a bake lands in `<image_family>-candidate` under the
name `<image name>-candidate`; `promote` copies it into `image_family` under the image
name and deletes the candidate; `discard` deletes it. An image in the served family with
the same input hash (packer/, ansible/, the agent) is reused instead of baking again.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from mlbatch.core.errors import AlreadyExists, BadInput, MlbatchError, NotFound
from mlbatch.core.manifest import Container, VmImage
from mlbatch.core.names import GCE_NAME, is_managed
from mlbatch.core.settings import Settings, bake_zone
from mlbatch.gcp import errors
from mlbatch.gcp.clients import Clients
from mlbatch.gcp.network import vpc
from mlbatch.gcp.operations import Waiter
from mlbatch.release.bake import BakeRequest, run_packer
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


def _vm_image(image, input_hash: str) -> VmImage:
    return VmImage(name=image.name, ref=image.self_link, input_hash=input_hash, baked_by_version=_version_of(image.description))


def find_image(settings: Settings, input_hash: str) -> VmImage | None:
    """A served image (family image_family) baked from the same inputs: READY, not deprecated, ours."""
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
    return _vm_image(max(usable, key=lambda i: i.creation_timestamp), input_hash)


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


def packer_variables(settings: Settings, request: BakeRequest, containers: dict[str, Container]) -> dict[str, str]:
    """What the googlecompute source needs beyond the variables both sources share."""
    return {
        "project_id": settings.project,
        "zone": bake_zone(settings),
        "source_image_family": settings.source_image_family,
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
    candidate = BakeRequest(
        version=request.version,
        git_sha=request.git_sha,
        image_name=name,
        image_family=candidate_family(settings),
        base_image=request.base_image,
        ca_bundle=request.ca_bundle,
    )
    say(f"baking {name} in {bake_zone(settings)} from {settings.source_image_project}/{settings.source_image_family}")
    build, digest = run_packer(
        root,
        candidate,
        "googlecompute.vm",
        say,
        extra_vars=packer_variables(settings, request, containers),
    )
    image = Images(settings).get(build["artifact_id"], f"reading the baked image {build['artifact_id']}")
    return _vm_image(image, digest)


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
    return VmImage(name=name, ref=result.self_link, input_hash=image.input_hash, baked_by_version=image.baked_by_version)


def discard(settings: Settings, image: VmImage, say: Say) -> None:
    """A candidate whose tests failed is deleted: nothing that looks released remains."""
    images = Images(settings, say)
    try:
        _candidate(settings, images, image)
    except NotFound:
        return  # already gone
    say(f"discarding {image.name}")
    images.delete(image.name)
