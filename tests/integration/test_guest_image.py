"""The VM branch of the Ansible roles, proven on a fake GCE guest (systemd, sshd, sudo).

A guest (tests/support/fake_vm/guest.py) is provisioned over ssh by the playbook with
mlbatch_target=vm (what Packer passes for its googlecompute source), then the whole image
suite, `vm` checks included, runs against it over ssh://. The guest runs as the runner
account, with a metadata server of its own (tests/support/fake_vm/metadata.py), and its
pre-pull pulls from a registry that only the release identity may push to and only that VM's
token may pull from (tests/support/registry.py). The provisioned guest is then committed as an
image of the fake Compute API and mlbatch.release.vmtest tests it on a temporary VM through
the gce provider.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from mlbatch.core import labels
from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.manifest import VmImage
from mlbatch.core.settings import load_settings
from mlbatch.release import vmtest
from mlbatch.release.bake import build_wheel
from mlbatch.release.imagetest import run_suite
from tests.conftest import ROOT, repo_config
from tests.support.fake_compute import CONTAINER_LABEL, FakeCompute
from tests.support.fake_compute.state import FakeInstance
from tests.support.fake_vm.guest import build_guest_image, commit_guest, free_port, start_guest, stop_guest
from tests.support.fake_vm.metadata import metadata_server
from tests.support.registry import READER, WRITER, Caller, authenticating_registry

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]
VERSION = "v0.0.1-guest.1"
VM_CHECKS = [
    "test_agent_unit_enabled_on_vm",
    "test_agent_unit_is_sandboxed_and_outlives_a_job_out_of_memory",
    "test_the_sandbox_lets_the_agent_drive_the_engine_and_write_only_its_work_directory",
    "test_the_agent_wheel_is_the_one_the_manifest_names",
    "test_apt_does_not_change_a_running_vm",
    "test_docker_engine_on_vm",
    "test_ca_bundle_on_vm",
    "test_prepulled_containers_on_vm",
]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
RELEASE = "mlbatch-release@mlbatch-test.iam.gserviceaccount.com"
RUNNER = "mlbatch-runner@mlbatch-test.iam.gserviceaccount.com"
PUSHER = "ya29.release-" + secrets.token_hex(8)  # the release identity's token, which pushes
READ_ONLY = "https://www.googleapis.com/auth/devstorage.read_only"


@dataclasses.dataclass
class Guest:
    container: str
    port: int
    key: Path
    directory: Path
    tokens: list[str]  # the tokens the guest's metadata server gave out (the pre-pull's login)
    wheel_sha256: str  # the agent wheel's, as the bake computes it


@pytest.fixture(scope="module")
def vms(infra):
    """The fake that answers for the guest: its metadata server and the tokens it gives out."""
    fake = FakeCompute("mlbatch-test", boot_containers=False).start()  # stop() waits for a started server
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def registry(infra, vms):
    def who(token: str) -> Caller | None:
        if token == PUSHER:
            return Caller(RELEASE, ("https://www.googleapis.com/auth/cloud-platform",))
        issued = vms.vm_tokens.issued.get(token)
        return Caller(issued.account, issued.scopes) if issued else None

    with authenticating_registry(who, {RELEASE: WRITER, RUNNER: READER}) as found:
        yield found


@pytest.fixture(scope="module")
def prepull_ref(registry) -> str:
    """A small image pushed by the release identity, named by digest as a release's manifest does."""
    from mlbatch.local.infra import docker_client

    client = docker_client()
    repository = f"{registry.address}/mlbatch/guest-prepull"
    tag = secrets.token_hex(4)
    login = {"username": "oauth2accesstoken", "password": PUSHER}
    client.images.get("debian:bookworm-slim").tag(repository, tag)
    client.images.push(repository, tag, auth_config=login)
    digest = client.images.get_registry_data(f"{repository}:{tag}", auth_config=login).id
    client.images.remove(f"{repository}:{tag}")
    return f"{repository}@{digest}"


@pytest.fixture(scope="module")
def guest(infra, vms, prepull_ref, tmp_path_factory):
    """A guest provisioned by the playbook's googlecompute branch, as Packer's ansible provisioner does:
    a VM running as the runner (read-only storage scope), with its metadata server."""
    directory = tmp_path_factory.mktemp("guest")
    key = vmtest.new_key(directory)
    public = key.with_suffix(".pub").read_text().strip()
    port = free_port()
    name = f"guest-{secrets.token_hex(3)}"
    body = {"name": name, "id": "4242", "serviceAccounts": [{"email": RUNNER, "scopes": [READ_ONLY]}]}
    metadata = metadata_server(vms, FakeInstance(zone="europe-west4-a", body=body, status="RUNNING"))
    container = start_guest(
        name,
        port,
        f"packer:{public}\n{vmtest.SSH_USER}:{public}",
        image=build_guest_image(),
        labels={"managed-by": CONTAINER_LABEL},
        metadata_host=f"127.0.0.1:{metadata.server_port}",
    )
    try:
        wheel = build_wheel(ROOT, directory)
        wheel_sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        extra = {
            "mlbatch_target": "vm",
            "mlbatch_version": VERSION,
            "mlbatch_git_sha": "0" * 40,
            "mlbatch_image_name": "mlbatch-v0-0-1-guest-1",
            "agent_wheel": str(wheel),
            "agent_wheel_sha256": wheel_sha256,
            "base_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
            "prepull_images": [prepull_ref],
        }
        result = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", f"127.0.0.1:{port},", "-u", "packer", "--private-key", str(key)]
            + ["--ssh-extra-args", "-o UserKnownHostsFile=/dev/null"]
            + ["-e", json.dumps(extra), str(ROOT / "ansible" / "playbook.yml")],
            capture_output=True,
            text=True,
            env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")},
            timeout=1200,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        yield Guest(container, port, key, directory, vms.vm_tokens.of(name), wheel_sha256)
    finally:
        stop_guest(container)
        metadata.shutdown()


def test_vm_checks_pass_on_the_provisioned_guest_over_ssh(guest, prepull_ref):
    ssh_config = vmtest.ssh_config(guest.directory, guest.key)
    result = run_suite(
        ROOT,
        f"ssh://{vmtest.SSH_USER}@127.0.0.1:{guest.port}",
        [
            f"--ssh-config={ssh_config}",
            f"--mlbatch-version={VERSION}",
            f"--mlbatch-prepulled={prepull_ref}",
            f"--mlbatch-agent-wheel-sha256={guest.wheel_sha256}",
            "-rA",
        ],
    )
    assert result.returncode == 0, result.stdout[-4000:]
    passed = set(re.findall(r"^PASSED \S+::(test_\w+)", result.stdout, flags=re.MULTILINE))
    assert set(VM_CHECKS) <= passed, result.stdout[-3000:]


def test_the_prepull_logged_in_as_the_vm_and_baked_no_token_into_the_image(guest, registry):
    assert guest.tokens, "the pre-pull did not ask the metadata server for the VM's token"
    assert (RUNNER, "repository:mlbatch/guest-prepull:pull") in registry.auth.requests
    found = subprocess.run(
        [
            "docker",
            "exec",
            guest.container,
            "grep",
            "-rIlF",
            *(f"--regexp={token}" for token in guest.tokens),
            "--",
            "/root",
            "/home",
            "/etc",
            "/opt",
            "/var/tmp",
            "/tmp",
        ],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 1, f"the registry token is written in {found.stdout.split()}"


@pytest.fixture(scope="module")
def fake_with_guest_image(guest):
    """The provisioned guest's disk as an image of the fake Compute API (a baked image)."""
    ref = commit_guest(guest.container, f"mlbatch-guest-baked:{secrets.token_hex(4)}")
    fake = FakeCompute("mlbatch-test").start()
    name = "mlbatch-v0-0-1-guest-1-20261125000000"
    link = fake.add_image(name, ref)
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://mlbatch-vmtest-unused", compute_endpoint=fake.endpoint)
    settings = load_settings(config, ROOT)
    image = VmImage(name=name, ref=link, input_hash="none", baked_by_version=VERSION, agent_wheel_sha256=guest.wheel_sha256)
    yield settings, fake, image
    fake.stop()
    subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def _left(fake) -> list[str]:
    """Instances of this fake still there, and containers still standing for any instance it made."""
    containers = []
    for body in fake.insert_bodies():
        label = f"label={labels.INSTANCE}={body['name']}"
        containers += subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True).stdout.split()
    return [name for _, name in fake.instances] + containers


def test_image_passes_on_a_temporary_vm_of_the_fake(fake_with_guest_image, prepull_ref):
    settings, fake, image = fake_with_guest_image
    lines: list[str] = []
    vmtest.test_image_on_vm(settings, ROOT, image, lines.append, prepulled=[prepull_ref])
    assert any("passed on a VM" in line for line in lines), lines
    assert not _left(fake)
    inserted = fake.insert_bodies()[-1]
    keys = {i["key"]: i["value"] for i in inserted["metadata"]["items"]}
    assert keys["ssh-keys"].startswith(f"{vmtest.SSH_USER}:ssh-ed25519 ")
    assert "accessConfigs" not in inserted["networkInterfaces"][0]  # no external IP


def test_failed_check_names_it_and_deletes_the_vm(fake_with_guest_image, prepull_ref):
    settings, fake, image = fake_with_guest_image
    missing = prepull_ref.split("@")[0] + "@sha256:" + "0" * 64
    with pytest.raises(MlbatchError) as failure:
        vmtest.test_image_on_vm(settings, ROOT, image, lambda line: None, prepulled=[missing])
    assert failure.value.exit_code == ExitCode.STEP_FAILED
    assert "test_prepulled_containers_on_vm" in str(failure.value)
    assert "test_agent_unit_enabled_on_vm" not in str(failure.value)
    assert not _left(fake)
