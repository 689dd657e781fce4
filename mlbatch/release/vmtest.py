"""Test a baked GCE image on a temporary VM: the testinfra suite over ssh, `vm` checks included.

The VM is created through the gce provider from the image's self link with a throw-away
ssh key in its `ssh-keys` metadata, tested, and deleted whatever happens (a failed check,
an error, Ctrl-C or SIGTERM). The release host must reach the VM's internal IP on port 22
(same VPC, VPN or IAP TCP forwarding): the VM has no external IP.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from mlbatch.core.cancel import cancel_on_signals
from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.manifest import VmImage
from mlbatch.core.scrub import scrub
from mlbatch.core.settings import Settings
from mlbatch.release.imagetest import failed_checks, run_suite, wheel_option
from mlbatch.ui import Say

SSH_USER = "mlbatch-test"
SUITE_TIMEOUT = 1200.0  # seconds the whole testinfra run may take


def ssh_config(directory: Path, key: Path) -> Path:
    """An ssh config for a VM nobody has seen before: its host key is new by definition."""
    config = directory / "ssh_config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  ConnectTimeout 20\n"
        "  ServerAliveInterval 15\n"
        f"  ControlPath {directory}/cm-%C\n"
        "  ControlMaster auto\n"
        "  ControlPersist 60\n"
    )
    return config


def new_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlbatch-image-test", "-f", str(key)], check=True)
    return key


def run_vm_suite(
    root: Path,
    address: str,
    key: Path,
    directory: Path,
    version: str,
    prepulled: Sequence[str],
    port: int = 22,
    user: str = SSH_USER,
    agent_wheel_sha256: str = "",
    gpu: bool = False,
) -> list[str]:
    """The whole suite, `vm` checks included (the GPU image's with `gpu`), over ssh://; returns the
    failed checks ([] if all passed)."""
    args = [f"--ssh-config={ssh_config(directory, key)}", f"--mlbatch-version={version}", *wheel_option(agent_wheel_sha256)]
    args += ["--mlbatch-gpu-image"] if gpu else []
    args += [f"--mlbatch-prepulled={ref}" for ref in prepulled]
    result = run_suite(root, f"ssh://{user}@{address}:{port}", args, timeout=SUITE_TIMEOUT)
    if result.returncode == 0:
        return []
    return failed_checks(result.stdout) or [f"the test run itself (exit {result.returncode}): {scrub(result.stdout[-1500:])}"]


@contextlib.contextmanager
def login(settings: Settings, public_key: str, say: Say) -> Iterator[str]:
    """The user the test logs in as: SSH_USER by ssh-keys metadata, or with `os_login` (org policy
    compute.requireOsLogin: metadata keys are ignored) the release identity's OS Login user,
    its key imported for the test and deleted after it."""
    if not settings.os_login:
        yield SSH_USER
        return
    from mlbatch.core import gcp_base
    from mlbatch.gcp.clients import Clients
    from mlbatch.release import oslogin

    clients = Clients(settings)
    account = gcp_base.principal(clients.credentials)
    user, fingerprint = oslogin.import_key(clients, account, public_key)
    say(f"image test: OS Login as {user} ({account}), key {fingerprint[:12]}… imported")
    try:
        yield user
    finally:
        oslogin.delete_key(clients, account, fingerprint)


def test_image_on_vm(settings: Settings, root: Path, image: VmImage, say: Say, prepulled: Sequence[str] = ()) -> None:
    """Boot `image` on a temporary VM and run the image suite there; raise MlbatchError naming the failed checks."""
    from mlbatch.providers.gce import GceProvider

    provider = GceProvider(settings)
    name = f"mlb-imagetest-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="mlbatch-vmtest-") as tmp, cancel_on_signals():
        directory = Path(tmp)
        key = new_key(directory)
        public_key = key.with_suffix(".pub").read_text()
        with login(settings, public_key, say) as user:
            try:
                say(f"image test: creating VM {name} from {image.name}")
                address = provider.create_test_vm(name, image.ref, user, public_key)
                say(f"image test: running tests/image on {name} ({address}) over ssh as {user}")
                failed = run_vm_suite(
                    root,
                    address,
                    key,
                    directory,
                    image.baked_by_version,
                    prepulled,
                    user=user,
                    agent_wheel_sha256=image.agent_wheel_sha256,
                    gpu=image.gpu,
                )
            finally:
                say(f"image test: deleting VM {name}")
                provider.delete(name)
    if failed:
        raise MlbatchError(
            f"image {image.name} failed its checks on a VM: {', '.join(failed)} "
            "(the image was not promoted; run tests/image with --hosts=ssh://... on a VM of it to see why)",
            ExitCode.STEP_FAILED,
        )
    say(f"image test: {image.name} passed on a VM")
