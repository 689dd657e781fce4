"""What the agent needs from Compute Engine: metadata, a token, and ending its own VM.

Plain HTTP through urllib: the agent stays small and never imports the Compute client.
GCE_METADATA_HOST is the variable google-auth honours too; the fake Compute API sets it.
Transient failures (the metadata server not answering yet at boot, 429/5xx, timeouts) are
retried with google.api_core's backoff, by the one retry predicate (mlbatch.core.gcp_base);
anything else is raised at once.

The VM's token is sent only over https to a Google API host (`*.googleapis.com`), or to a
loopback address (the tests' fake Compute API): `mlbatch-compute-endpoint` is metadata, which
whoever may set an instance's metadata controls, and a token sent elsewhere, or in clear,
is the runner's identity handed over. Anything else is refused before the token is read.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid

from mlbatch.core.errors import BadInput
from mlbatch.core.gcp_base import retry
from mlbatch.core.runs import InstanceSpec, RunSpec

DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com"
GOOGLE_API_DOMAIN = ".googleapis.com"
# scheme://host[:port]/...: a host of plain name characters or a bracketed IPv6 address, and
# nothing else before the path (no user info, no backslash: what urllib would connect to is
# then exactly the host checked here).
_URL = re.compile(r"(?P<scheme>[a-z]+)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:/[^\s\\]*)?")


# Seconds of the first wait between tries and of the longest (it doubles, with jitter); read at
# each call, so the unit tests shorten them as they do the controller's waits.
BACKOFF_FIRST = 0.5
BACKOFF_LONGEST = 8.0


def _backoff(timeout: float):
    return retry(timeout, initial=BACKOFF_FIRST, maximum=BACKOFF_LONGEST)


# At boot the metadata server (and the network) may take a while: wait up to 3 minutes.
BOOT_RETRY = 180.0


def _metadata_once(path: str, default: str | None, timeout: float) -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    request = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/{path}",  # noqa: S310 - metadata server
        headers={"Metadata-Flavor": "Google"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and default is not None:
            return default
        raise


def metadata(path: str, default: str | None = None, retry_for: float = BOOT_RETRY) -> str:
    return _backoff(retry_for)(_metadata_once)(path, default, min(10.0, retry_for))


RUN_SPEC_ATTRIBUTE = "instance/attributes/mlbatch-run-spec"


def carries_run_spec() -> bool:
    """Whether this VM is a run's: the controller gives each run VM its spec as the metadata
    attribute mlbatch-run-spec. A VM without it (the image-test VM, a Cloud Batch task VM)
    gets 404 for it. Raises when the metadata server does not answer within BOOT_RETRY."""
    try:
        metadata(RUN_SPEC_ATTRIBUTE)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def instance_spec() -> InstanceSpec:
    return InstanceSpec(
        spec=RunSpec.from_json(metadata(RUN_SPEC_ATTRIBUTE), "metadata mlbatch-run-spec"),
        attempt=int(metadata("instance/attributes/mlbatch-attempt")),
        instance=metadata("instance/name"),
        workdir=os.environ.get("MLBATCH_WORKDIR", "/var/lib/mlbatch/work"),
    )


def run_reference() -> tuple[str, str, int] | None:
    """The run's bucket, id and attempt from attributes of their own (mlbatch-bucket,
    mlbatch-run-id), for recording a failure when mlbatch-run-spec cannot be read."""
    bucket = metadata("instance/attributes/mlbatch-bucket", default="", retry_for=30.0)
    run_id = metadata("instance/attributes/mlbatch-run-id", default="", retry_for=30.0)
    attempt = metadata("instance/attributes/mlbatch-attempt", default="", retry_for=30.0)
    if not (bucket and run_id and attempt.isdigit()):
        return None
    return bucket, run_id, int(attempt)


def preempted() -> bool:
    """Whether Compute is preempting this VM (instance/preempted), asked on SIGTERM: the answer
    must come within the ~30 s shutdown window, so retries stop after 5 s (then: not preempted)."""
    try:
        return metadata("instance/preempted", default="FALSE", retry_for=5.0).strip().upper() == "TRUE"
    except Exception:
        return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_destination(url: str) -> str:
    """`url`, if the VM's token may be sent there: https to a host under googleapis.com, or
    http(s) to a loopback address (127.0.0.0/8, ::1, localhost: a test's fake API). Anything
    else raises BadInput, before the token is read."""
    match = _URL.fullmatch(url)
    scheme, host = (match["scheme"], match["host"].lower()) if match else ("", "")
    google = scheme == "https" and host.endswith(GOOGLE_API_DOMAIN) and len(host) > len(GOOGLE_API_DOMAIN)
    if google or (scheme in ("http", "https") and _loopback(host)):
        return url
    raise BadInput(
        f"refused to send this VM's token to {url[:200]!r} (from metadata mlbatch-compute-endpoint): "
        f"expected https://<host>{GOOGLE_API_DOMAIN}/..., or a loopback address (127.0.0.0/8, ::1, localhost) in tests"
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


def delete_self(retry_for: float = 120.0) -> None:
    """Delete this VM (the controller may be gone); one request id across retries. Another
    delete under way (the controller's: 400 resourceNotReady) or none left (404) is success.
    An endpoint the token may not go to (token_destination) raises before any request."""
    endpoint = metadata("instance/attributes/mlbatch-compute-endpoint", default=DEFAULT_COMPUTE_ENDPOINT)
    project = metadata("project/project-id")
    zone = metadata("instance/zone").rsplit("/", 1)[-1]
    name = metadata("instance/name")
    url = token_destination(f"{endpoint}/compute/v1/projects/{project}/zones/{zone}/instances/{name}?requestId={uuid.uuid4()}")

    def attempt() -> None:
        # urllib follows no redirect of a DELETE (HTTPRedirectHandler raises), so the token
        # goes nowhere but `url`.
        request = urllib.request.Request(  # noqa: S310 - https to Google, or the loopback test fake
            url, method="DELETE", headers={"Authorization": f"Bearer {access_token()}"}
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code == 404 or (exc.code == 400 and b"resourceNotReady" in exc.read()):
                return
            raise

    _backoff(retry_for)(attempt)()


def end_instance() -> None:
    """Delete this VM; if that cannot be done, power it off: a TERMINATED VM costs nothing
    but its disk, and the controller (or `invoke gc`) deletes it."""
    try:
        delete_self()
        return
    except Exception as exc:
        print(f"[mlbatch] could not delete this instance ({type(exc).__name__}: {exc}); powering off", flush=True)
    systemctl = shutil.which("systemctl")
    if systemctl:
        subprocess.run([systemctl, "poweroff"], check=False)
