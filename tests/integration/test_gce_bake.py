"""Packer 1.6.6's real googlecompute builder bakes the VM image against the fake Compute API.

Nothing of Google is reachable here, so its edges are local: an intercepting proxy (mitmdump)
routes compute.googleapis.com / www.googleapis.com to the fake Compute API and checks the
bearer token, which Packer obtains for real from a loopback token endpoint with a
service-account key (GOOGLE_APPLICATION_CREDENTIALS); GCE_METADATA_HOST names a loopback
metadata server (Packer asks it for its identity) so nothing probes 169.254.169.254. The
fake boots debian-cloud/debian-12 as a guest container with sshd on a loopback port, Packer
runs the Ansible roles over ssh, and images.insert from the kept disk commits that guest
into the Docker image behind the new GCE image.

A bake that fails holds no token anywhere a person or a neighbour could read it: not in what
mlbatch prints, not in the release's error message, not in any process's command line or
environment (tests/support/process_watch.py samples them every 50 ms through the bake). The
tokens looked for are the release identity's (the Application Default Credentials' access
token, which mlbatch holds) and the bake VM's own (its metadata server's, which the pre-pull
logs in with).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from mlbatch.core.errors import ExitCode, StepFailed
from mlbatch.core.manifest import Container
from mlbatch.local.base_images import BuildBase
from mlbatch.release import flow, gce_image
from mlbatch.release.bake import BakeRequest, input_hash
from mlbatch.release.targets.gcp import GcpTarget
from mlbatch.ui import Steps
from tests.conftest import ROOT
from tests.integration.helpers import fake_compute_settings
from tests.support.fake_compute import FakeCompute, Latencies
from tests.support.fake_oauth import FakeOAuth
from tests.support.packer_edges import add_debian_cloud, packer_edges
from tests.support.process_watch import ProcessWatch

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]
PROJECT = "mlbatch-test"
VERSION = "v0.9.0-bake.1"
PROBE = "127.0.0.1:5000/mlbatch-prepull-probe"


def pushed_probe() -> Container:
    """A container of the release to pre-pull: pushed to the local registry, named by digest."""
    tag = f"{PROBE}:gcebake"
    subprocess.run(["docker", "tag", "debian:bookworm-slim", tag], check=True)
    subprocess.run(["docker", "push", "-q", tag], check=True, capture_output=True)
    digests = json.loads(
        subprocess.run(["docker", "inspect", "-f", "{{json .RepoDigests}}", tag], capture_output=True, text=True).stdout
    )
    digest = next(d for d in digests if d.startswith(PROBE + "@")).split("@")[1]
    return Container(name="probe", repository=PROBE, digest=digest)


@pytest.fixture(scope="module")
def cloud(infra, tmp_path_factory, request):
    """The fake Compute API behind the intercepting proxy, a token endpoint, Packer's environment."""
    tmp = tmp_path_factory.mktemp("gce-bake")
    fake = FakeCompute(PROJECT, latencies=Latencies.quick()).start()  # the bake, not the image copy's wait
    add_debian_cloud(fake)
    oauth = FakeOAuth(token=f"ya29.fake-{secrets.token_hex(8)}").start()
    key = oauth.write_key(tmp / "release-sa.json", project=PROJECT)
    try:
        with packer_edges(fake, oauth, key) as proxy:
            yield fake, oauth, proxy
    finally:
        oauth.stop()
        fake.stop()


def settings_for(fake):
    return fake_compute_settings(fake.endpoint)


def test_packer_bakes_a_candidate_that_is_promoted_and_then_reused(cloud):
    fake, oauth, proxy = cloud
    settings = settings_for(fake)
    probe = pushed_probe()
    name = f"mlbatch-v0-9-0-bake-1-{time.strftime('%Y%m%d%H%M%S')}"
    request = BakeRequest(
        version=VERSION,
        git_sha="0123abcd",
        image_name=name,
        image_family="mlbatch",
        base_image="debian:bookworm-slim",
        ca_bundle=settings.ca_bundle,
        source=gce_image.bake_source(settings),  # what the release hashes: the family's newest image
    )
    assert request.source.image.endswith("/projects/debian-cloud/global/images/debian-12-bookworm-v20261101")
    lines: list[str] = []
    started = time.monotonic()
    candidate = gce_image.bake(settings, ROOT, request, {"probe": probe}, lines.append)
    baked_in = time.monotonic() - started
    print(f"\nbake took {baked_in:.0f}s")

    # Ansible ran the same roles as on the docker source, over Packer's ssh communicator.
    tasks = " ".join(lines)
    for role in ("base", "docker", "agent", "prepull", "provenance"):
        assert f"TASK [{role} :" in tasks, role
    assert "PLAY RECAP" in tasks
    insert = next(b for m, p, b in fake.requests if m == "POST" and p.endswith("/zones/europe-west4-a/instances"))
    ssh_keys = next(i["value"] for i in insert["metadata"]["items"] if i["key"] == "ssh-keys")
    assert ssh_keys.startswith("packer:ssh-ed25519 ")
    assert not insert["networkInterfaces"][0].get("accessConfigs")  # no external IP (Packer sends [null])
    assert insert["serviceAccounts"][0]["email"] == settings.service_account
    # Hardened (issue 16, item 7): Shielded (the fake refuses Secure Boot on an image that is not
    # UEFI-compatible), no project-wide ssh key, and one read-only scope instead of the defaults.
    assert insert["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}
    metadata = {i["key"]: i["value"] for i in insert["metadata"]["items"]}
    assert metadata["block-project-ssh-keys"] == "true"
    assert insert["serviceAccounts"][0]["scopes"] == ["https://www.googleapis.com/auth/devstorage.read_only"]
    assert insert["disks"][0]["initializeParams"]["sourceImage"].endswith("/debian-12-bookworm-v20261101")
    # Packer's calls went through the proxy with the token it got from the token endpoint.
    calls = [e["request"] for e in proxy.exchanges()]
    assert any("/projects/debian-cloud/global/images/debian-12-bookworm-v20261101" in c for c in calls)  # exactly it
    assert all(e["status"] < 500 for e in proxy.exchanges()), proxy.exchanges()
    repaired = [e["repaired"] for e in proxy.exchanges() if "repaired" in e]
    print("REPLACED: the proxy repaired Packer's sourceDisk URL (Debian's Packer 1.6.6 build):", repaired)
    assert oauth.grants and oauth.grants[0]["iss"] == oauth.client_email

    # The candidate: in the candidate family, labelled, READY; no build VM or disk is left.
    record = fake.images[candidate.name]
    assert candidate.name == name + "-candidate"
    assert candidate.ref == record["selfLink"]
    assert record["family"] == "mlbatch-candidate" and record["status"] == "READY"
    assert record["labels"] == {
        "managed-by": "mlbatch",
        "version": "v0-9-0-bake-1",
        "git-sha": "0123abcd",
        "input-hash": input_hash(ROOT, request.source)[:63],
    }
    assert record["description"] == f"mlbatch {VERSION} 0123abcd agent-wheel-sha256:{candidate.agent_wheel_sha256}"
    assert candidate.baked_by_version == VERSION
    assert fake.instances == {} and fake.disks == {}

    # The image is the provisioned guest's disk: provenance written, the probe pre-pulled.
    docker_ref = record["_docker_ref"]
    provenance = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", docker_ref, "/etc/mlbatch-release"], capture_output=True, text=True
    )
    assert f"MLBATCH_VERSION={VERSION}" in provenance.stdout, provenance
    pulled = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", docker_ref, "-c", "cat /var/lib/docker/image/*/repositories.json"],
        capture_output=True,
        text=True,
    )
    assert probe.ref in pulled.stdout, pulled

    # Promoted: served under the image name in the served family; the candidate is gone.
    served = gce_image.promote(settings, candidate, lines.append)
    assert served.ref == f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/global/images/{name}"
    assert fake.images[name]["family"] == "mlbatch"
    assert [n for n, i in fake.images.items() if i["family"] == "mlbatch-candidate"] == []
    # A second release with the same inputs finds it and skips the bake.
    assert gce_image.find_image(settings, input_hash(ROOT, request.source)) == served
    assert len(served.agent_wheel_sha256) == 64  # read back from the description

    # A candidate whose tests failed is discarded: nothing in either family but the served image.
    failed = fake.add_image(name + "-x-candidate", docker_ref, family="mlbatch-candidate", labels=record["labels"])
    gce_image.discard(settings, candidate.__class__(name + "-x-candidate", failed, candidate.input_hash, VERSION), lines.append)
    assert sorted(fake.images) == [name]


# --- a failing bake leaks no token ----------------------------------------------------------


def failing_bake(
    cloud, capfd, family: str, containers: dict[str, Container], ca_bundle
) -> tuple[StepFailed, str, ProcessWatch, str]:
    """The release's vm-image step (flow._image through the gcp target) into a family of its own,
    so that no image of the tests above is reused; it must fail. Returns the error, everything
    mlbatch printed meanwhile, the process watch and the build VM's name."""
    fake, _, proxy = cloud
    settings = fake_compute_settings(fake.endpoint, image_family=family)
    request = BakeRequest(
        version=VERSION,
        git_sha="0123abcd",
        image_name=f"{family}-v0-9-0-bake-1-{time.strftime('%Y%m%d%H%M%S')}",
        image_family=family,
        base_image="debian:bookworm-slim",
        ca_bundle=ca_bundle,
    )
    capfd.readouterr()
    before = {b["name"] for m, p, b in fake.requests if m == "POST" and p.endswith("/instances")}
    base = BuildBase(request.base_image, pinned=False, image_id="")  # unused: the gcp bake starts from its source image
    with ProcessWatch(exempt=[proxy.pid]) as watch, pytest.raises(StepFailed) as failure:
        flow._image(Steps(), VERSION, GcpTarget(settings), ROOT, request, containers, ("vm image", "image tests"), base)
    out, err = capfd.readouterr()
    built = [b["name"] for m, p, b in fake.requests if m == "POST" and p.endswith("/instances") and b["name"] not in before]
    assert len(built) == 1, built
    print(f"\nsampled every process {watch.samples} times; {len(watch.cmdlines)} distinct command lines\n{failure.value}")
    return failure.value, out + err, watch, built[0]


def assert_no_token(tokens: list[str], printed: str, error: StepFailed, watch: ProcessWatch) -> None:
    assert all(tokens), tokens
    for token in tokens:
        assert token not in printed, f"printed: ...{printed[max(0, printed.find(token) - 300) :][:400]}..."
        assert token not in str(error), f"in the error message: {error}"
    assert watch.showing(tokens) == []


def test_a_bake_whose_ansible_fails_early_shows_no_token(cloud, capfd, tmp_path):
    """Ansible fails in its first role (the extra CA bundle it is given does not exist), while the
    Executing-Ansible line is still among the last lines the error message quotes."""
    fake, oauth, _ = cloud
    missing = tmp_path / "deleted-ca-bundle.pem"
    error, printed, watch, vm = failing_bake(cloud, capfd, "mlbatch-early", {"probe": pushed_probe()}, missing)

    assert error.exit_code == ExitCode.STEP_FAILED
    assert "release v0.9.0-bake.1 failed at step 'vm image'" in str(error)
    assert "packer build failed" in str(error) and str(missing) in str(error)  # what failed is still said
    assert_no_token([oauth.token, *fake.vm_tokens.of(vm)], printed, error, watch)
    assert fake.instances == {} and fake.disks == {}


def test_a_bake_whose_prepull_fails_after_the_registry_login_shows_no_token(cloud, capfd):
    """The pre-pull logs in with the bake VM's own token, then its pull of a digest the registry does
    not have fails: the token was in play, and is still nowhere."""
    fake, oauth, _ = cloud
    absent = Container(name="probe", repository=PROBE, digest="sha256:" + secrets.token_hex(32))
    ca_bundle = settings_for(fake).ca_bundle  # this machine's TLS proxy: the agent's install goes through it
    error, printed, watch, vm = failing_bake(cloud, capfd, "mlbatch-prepull", {"probe": absent}, ca_bundle)

    assert error.exit_code == ExitCode.STEP_FAILED
    assert "failed at step 'vm image'" in str(error) and absent.ref in str(error)
    assert "TASK [prepull : Log in to each registry" in printed
    vm_tokens = fake.vm_tokens.of(vm)
    assert_no_token([oauth.token, *vm_tokens], printed, error, watch)
    assert vm_tokens, "the pre-pull did not ask the bake VM's metadata server for its token"
    assert fake.instances == {} and fake.disks == {}
