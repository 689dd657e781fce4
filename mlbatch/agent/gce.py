"""What the agent needs from Compute Engine: metadata, a token, and deleting its own VM.

Plain HTTP through urllib: the agent stays small and never imports the Compute client.
GCE_METADATA_HOST is the variable google-auth honours too; the fake Compute API sets it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid

from mlbatch.core.runs import InstanceSpec, RunSpec

DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com"


def metadata(path: str, default: str | None = None) -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    request = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/{path}",  # noqa: S310 - metadata server
        headers={"Metadata-Flavor": "Google"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and default is not None:
            return default
        raise


def instance_spec() -> InstanceSpec:
    return InstanceSpec(
        spec=RunSpec.from_json(metadata("instance/attributes/mlbatch-run-spec"), "metadata mlbatch-run-spec"),
        attempt=int(metadata("instance/attributes/mlbatch-attempt")),
        instance=metadata("instance/name"),
        workdir=os.environ.get("MLBATCH_WORKDIR", "/var/lib/mlbatch/work"),
    )


def access_token() -> str:
    return json.loads(metadata("instance/service-accounts/default/token"))["access_token"]


def needs_registry_login(image_ref: str) -> bool:
    """Artifact Registry and Container Registry take the VM's service-account token."""
    host = image_ref.split("/")[0]
    return host.endswith("-docker.pkg.dev") or host == "gcr.io" or host.endswith(".gcr.io")


def registry_login(client, image_ref: str) -> None:
    if needs_registry_login(image_ref):
        client.login(username="oauth2accesstoken", password=access_token(), registry=image_ref.split("/")[0])


def delete_self(attempts: int = 5) -> None:
    """Delete this VM (the controller may be gone); one request id across retries."""
    endpoint = metadata("instance/attributes/mlbatch-compute-endpoint", default=DEFAULT_COMPUTE_ENDPOINT)
    project = metadata("project/project-id")
    zone = metadata("instance/zone").rsplit("/", 1)[-1]
    name = metadata("instance/name")
    url = f"{endpoint}/compute/v1/projects/{project}/zones/{zone}/instances/{name}?requestId={uuid.uuid4()}"
    for attempt in range(attempts):
        request = urllib.request.Request(  # noqa: S310 - a fixed https API endpoint (or the test fake)
            url,
            method="DELETE",
            headers={"Authorization": f"Bearer {access_token()}"},
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()  # noqa: S310
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return
            if exc.code not in (429, 500, 502, 503, 504) or attempt == attempts - 1:
                raise
        except urllib.error.URLError:
            if attempt == attempts - 1:
                raise
        time.sleep(2**attempt)
