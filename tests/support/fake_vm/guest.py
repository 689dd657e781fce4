"""A fake Compute Engine VM that Packer, Ansible, testinfra and Cloud Batch can work on as on a
VM: the fake Compute API boots its instances from guest images with it, the fake Cloud Batch
API its task VMs.

    build_guest_image() -> str
        Builds (once; cached by a hash of its recipe) GUEST_IMAGE from the local
        debian:bookworm-slim plus openssh-server, sudo, python3 and systemd: what GCE's
        debian-12 public image offers an ssh client.
    start_guest(instance_name, ssh_port, ssh_keys, image=GUEST_IMAGE, labels=None,
                metadata_host="127.0.0.1:1", ssh_address="127.0.0.1", hostname="") -> container id
        Boots `image` (GUEST_IMAGE, or an image committed from a provisioned guest) as the
        instance: systemd is PID 1, sshd listens on ssh_address:ssh_port only (the host's
        network: the guest has no address of its own), and every `user:ssh-rsa AAAA... comment`
        line of ssh_keys (the instance's `ssh-keys` metadata) becomes a user with that
        authorized key and passwordless sudo, as GCE's guest agent does.
        Returns once sshd answers. The console (systemd, units writing to the console, e.g.
        the mlbatch agent) is the container's tty: `docker logs` is the serial port.
    loopback_address() -> "127.x.y.z"
        A loopback address of the instance's own, with port 22 free: give it as ssh_address
        and networkIP, and ssh (Packer's communicator, testinfra) reaches it on port 22 as
        on a VM's internal IP. is_guest_image(ref) tells a guest image from an agent image.
    wait_until_booted(container_id) -> str
        Until systemd finished booting (`systemctl is-system-running --wait`: every unit the
        boot starts has started, or was skipped by its conditions); returns its state.
    stop_guest(container_id)
        Powers the guest off (SIGRTMIN+3: systemd's clean shutdown) and removes it.

How the container stands in for a VM, and where it cannot:
- systemd as init: the engine here has cgroup v1 and refuses --privileged (its bounding
  set lacks CAP_SYS_RESOURCE), so the guest gets every other capability, no seccomp or
  AppArmor profile, the host's cgroup tree mounted read-write (systemd stays inside the
  container's own subtree) and tmpfs on /run. Units, `systemctl enable` and the engine
  really run.
- Network: the host's (no docker bridge, no private address is ever used). The guest's
  Docker engine therefore must not touch the host's bridges or iptables: the image ships
  /etc/docker/daemon.json with `iptables: false` and no ip forwarding or masquerading - the
  fake's hardware, not the roles'. It must not say `bridge: none` either: dockerd then
  deletes the link named docker0, which in the host's network is the host engine's bridge.
  Jobs run with no network (`network_mode: none`, what the agent gives a job that declares
  none); one that declares a network would need a bridge, which this guest cannot have.
- Disk: the guest's engine stores images with vfs (overlay on overlay does not work), in
  the container's own layer, so images pulled into it survive `docker commit` of the
  guest (a baked image). A directory of an image's layer cannot be renamed (overlayfs,
  EXDEV): the boot removes /var/lib/docker/runtimes, which dockerd renames at each start.
- Metadata: GCE_METADATA_HOST in /etc/environment (which the agent's unit reads) names the
  instance's metadata server; without one it names a closed loopback port, so that no
  lookup of metadata.google.internal ever leaves the machine.
- A guest is no kernel: no reboot, no kernel modules, no serial port other than the tty.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mlbatch.core import labels as mlbatch_labels  # the agent's: a job container names its instance

BASE_IMAGE = "debian:bookworm-slim"
GUEST_REPOSITORY = "mlbatch-fake-gce-guest"
GUEST_LABEL = "org.mlbatch.fake-gce-guest"
BOOT = "/usr/local/sbin/fake-gce-boot"
SSH_TIMEOUT = 90.0

# What the fake's "guest agent" does at boot before handing over to systemd: host keys of
# its own, sshd on the loopback port it was given, a user per ssh-keys line with sudo.
BOOT_SCRIPT = r'''#!/usr/bin/python3
"""fake GCE boot: ssh keys from metadata -> users, sshd on 127.0.0.1:PORT, then systemd."""
import os
import pwd
import re
import shutil
import socket
import subprocess

port = int(os.environ["FAKE_GCE_SSH_PORT"])
address = os.environ.get("FAKE_GCE_SSH_ADDRESS", "127.0.0.1")
with open("/etc/ssh/sshd_config.d/00-fake-gce.conf", "w") as f:
    f.write(f"Port {port}\nListenAddress {address}\nPasswordAuthentication no\nUseDNS no\n")
if not any(name.startswith("ssh_host_") for name in os.listdir("/etc/ssh")):
    subprocess.run(["ssh-keygen", "-A"], check=True, stdout=subprocess.DEVNULL)
for line in os.environ.get("FAKE_GCE_SSH_KEYS", "").splitlines():
    user, sep, key = line.strip().partition(":")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) or not key.startswith(("ssh-", "ecdsa-")):
        print(f"fake-gce-boot: ignoring ssh-keys line {line[:40]!r}", flush=True)
        continue
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
    entry = pwd.getpwnam(user)
    ssh_dir = os.path.join(entry.pw_dir, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(ssh_dir, "authorized_keys"), "a") as f:
        f.write(key + "\n")
    for path in (ssh_dir, os.path.join(ssh_dir, "authorized_keys")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    with open("/etc/sudoers.d/google_sudoers", "a") as f:  # the guest agent's file
        f.write(f"{user} ALL=(ALL:ALL) NOPASSWD:ALL\n")
    os.chmod("/etc/sudoers.d/google_sudoers", 0o440)
# The VM resolves its own name, as GCE's guest environment makes it (sudo warns otherwise).
try:
    socket.gethostbyname(socket.gethostname())
except OSError:
    with open("/etc/hosts", "a") as f:
        f.write(f"127.0.1.1 {socket.gethostname()}\n")
# The fake's disk is overlayfs: a directory of the image's own layer cannot be renamed
# (EXDEV). dockerd renames runtimes/ at each start, and recreates it: let it.
shutil.rmtree("/var/lib/docker/runtimes", ignore_errors=True)
# What a VM's network reaches: its metadata server, and Cloud Storage (the emulator, when the fake has one).
ours = {"GCE_METADATA_HOST": os.environ.get("FAKE_GCE_METADATA_HOST", "127.0.0.1:1")}
if os.environ.get("FAKE_GCE_STORAGE_EMULATOR_HOST"):
    ours["STORAGE_EMULATOR_HOST"] = os.environ["FAKE_GCE_STORAGE_EMULATOR_HOST"]
lines = []
if os.path.exists("/etc/environment"):
    with open("/etc/environment") as f:
        lines = [line for line in f.read().splitlines() if line.split("=", 1)[0] not in (*ours, "STORAGE_EMULATOR_HOST")]
with open("/etc/environment", "w") as f:
    f.write("\n".join([*lines, *(f"{k}={v}" for k, v in ours.items())]) + "\n")
os.execv("/lib/systemd/systemd", ["/lib/systemd/systemd"])
'''

# Not "bridge": "none": with it dockerd deletes any link named docker0 at start, here the
# host's own bridge. The guest's engine finds the host's docker0 and leaves it alone.
DAEMON_JSON = '{"iptables": false, "ip6tables": false, "ip-forward": false, "ip-masq": false}\n'

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       systemd systemd-sysv dbus openssh-server sudo python3 ca-certificates \\
    && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \\
    && systemctl mask getty@tty1.service console-getty.service systemd-udevd.service \\
    && mkdir -p /etc/docker
COPY fake-gce-boot {BOOT}
COPY daemon.json /etc/docker/daemon.json
RUN chmod 0755 {BOOT}
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["{BOOT}"]
"""

RECIPE_HASH = hashlib.sha256((DOCKERFILE + BOOT_SCRIPT + DAEMON_JSON).encode()).hexdigest()[:12]
GUEST_IMAGE = f"{GUEST_REPOSITORY}:debian-12-{RECIPE_HASH}"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {shlex.join(args[:3])} ...: {result.stderr.strip()[-2000:]}")
    return result


def build_guest_image() -> str:
    """GUEST_IMAGE, built from BASE_IMAGE unless an image of this very recipe exists."""
    if _docker("image", "inspect", GUEST_IMAGE, check=False).returncode == 0:
        return GUEST_IMAGE
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        (Path(context) / "fake-gce-boot").write_text(BOOT_SCRIPT)
        (Path(context) / "daemon.json").write_text(DAEMON_JSON)
        _docker("build", "-q", "--label", f"{GUEST_LABEL}=true", "-t", GUEST_IMAGE, context)
    return GUEST_IMAGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_address(port: int = 22) -> str:
    """A random 127.x.y.z on which `port` is free: the address of one fake instance."""
    while True:
        address = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}.{secrets.randbelow(253) + 2}"
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
        return address


def is_guest_image(image: str) -> bool:
    """True for GUEST_IMAGE and images committed from a guest: they boot as VMs, not as the agent."""
    result = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False)
    return result.returncode == 0 and f'"{GUEST_LABEL}":"true"' in result.stdout


def wait_for_ssh(port: int, address: str = "127.0.0.1", timeout: float = SSH_TIMEOUT) -> None:
    """Until sshd on address:port sends its banner (as Packer's communicator waits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sshd on {address}:{port} after {timeout:.0f}s")
        time.sleep(0.5)


def start_guest(
    instance_name: str,
    ssh_port: int,
    ssh_keys: str,
    image: str = GUEST_IMAGE,
    labels: dict[str, str] | None = None,
    metadata_host: str = "127.0.0.1:1",
    ssh_address: str = "127.0.0.1",
    storage_emulator: str = "",
    hostname: str = "",
    mounts: list[str] | tuple[str, ...] = (),
) -> str:
    """Boot `image` as instance `instance_name`; return its container id once sshd answers.

    labels: the container's, e.g. managed-by=<the fake that owns it> (the fakes list and
    remove their containers by it); org.mlbatch.instance=<instance_name> is always set.
    metadata_host: HOST:PORT of the instance's metadata server (fake_vm/metadata.py).
    ssh_address: the loopback address sshd listens on; loopback_address() gives each
    instance one of its own, so that it can listen on port 22 like a VM on its own IP.
    hostname: the VM's hostname (GCE names it after the instance); empty: the container id.
    mounts: extra `-v` bindings (SOURCE:TARGET[:ro]), e.g. the fake GPU driver's nvidia-smi.
    """
    if not ipaddress.ip_address(ssh_address).is_loopback:
        raise ValueError(f"ssh_address {ssh_address!r}: a guest listens on a loopback address (127.0.0.0/8) only")
    argv = [
        "run",
        "-d",
        "-t",  # the tty is the console: docker logs = serial port 1
        "--name",
        f"fakegce-guest-{instance_name}",
        "--label",
        f"{mlbatch_labels.INSTANCE}={instance_name}",
        "--network",
        "host",
        "--cgroupns",
        "host",
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--tmpfs",
        "/tmp",
        "-e",
        f"FAKE_GCE_SSH_PORT={int(ssh_port)}",
        "-e",
        f"FAKE_GCE_SSH_KEYS={ssh_keys}",
        "-e",
        f"FAKE_GCE_METADATA_HOST={metadata_host}",
        "-e",
        f"FAKE_GCE_SSH_ADDRESS={ssh_address}",
        "-e",
        f"FAKE_GCE_STORAGE_EMULATOR_HOST={storage_emulator}",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    for mount in mounts:
        argv += ["-v", mount]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    container = _docker(*argv, image).stdout.strip()
    try:
        wait_for_ssh(ssh_port, ssh_address)
    except TimeoutError as exc:
        console = _docker("logs", "--tail", "40", container, check=False).stdout
        stop_guest(container)
        raise TimeoutError(f"{exc}; console:\n{console}") from None
    return container


def wait_until_booted(container: str, timeout: float = SSH_TIMEOUT) -> str:
    """systemd's state once the boot is over: "running", or "degraded" when a unit failed;
    "starting" when the boot has not ended within `timeout` seconds."""
    try:
        result = subprocess.run(
            ["docker", "exec", container, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "starting"
    return result.stdout.strip() or result.stderr.strip()


def stop_guest(container: str) -> None:
    """Power off (systemd shuts down its units) and remove the guest."""
    _docker("stop", "-t", "20", container, check=False)
    _docker("rm", "-f", "-v", container, check=False)


def commit_guest(container: str, image: str) -> str:
    """The guest's disk as an image the fake can boot (what images.insert from a disk does)."""
    _docker("commit", container, image)
    return image
