"""`invoke local.up/status/down`: bring up what the local profile needs, idempotently.

- the Docker engine (installed with apt and started when we are root on Debian/Ubuntu),
- a registry on 127.0.0.1:5000 (Debian's `docker-registry`, else the `registry:2` image),
- the base image (pulled, else built offline with debootstrap + `docker import`), with
  the configured extra CA bundle layered on so that pip and requests trust a TLS proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlbatch.core import image_paths, labels
from mlbatch.core.bucket import file_bucket_dir
from mlbatch.core.errors import BadInput, InfraError, MlbatchError
from mlbatch.core.settings import Settings
from mlbatch.ui import Say

if TYPE_CHECKING:  # loaded where a base image is made: a run's provider takes only docker_client
    from mlbatch.local import base_images

CA_LABEL = labels.CA_BUNDLE_SHA256
CA_PATH = image_paths.CA_BUNDLE
_DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _is_debian_root() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def _apt_install(*packages: str, say: Say) -> None:
    say(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


def _wait(what: str, ready: Callable[[], bool], timeout: float, say: Say) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise InfraError(f"{what} did not become ready within {timeout:.0f}s")
        time.sleep(0.5)
    say(f"{what}: ready")


def _spawn(argv: list[str], log: Path, pidfile: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(str(proc.pid))


def _stop_pidfile(pidfile: Path) -> bool:
    if not pidfile.exists():
        return False
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
    pidfile.unlink()
    return True


# --- Docker engine -----------------------------------------------------------------


def docker_client():
    import docker

    return docker.from_env(timeout=600)


def engine_running() -> bool:
    try:
        return bool(docker_client().ping())
    except Exception:
        return False


def ensure_engine(settings: Settings, say: Say) -> None:
    if engine_running():
        say("docker engine: running")
        return
    if not _is_debian_root():
        raise InfraError(
            "the Docker engine is not reachable. Install and start it "
            "(Debian/Ubuntu: `sudo apt-get install docker.io && sudo systemctl start docker`), "
            "make sure your user may use it (`sudo usermod -aG docker $USER`), then run `invoke local.up` again"
        )
    if not shutil.which("dockerd"):
        _apt_install("docker.io", say=say)
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "start", "docker"], check=True)
    else:  # containers and CI machines have no systemd: run dockerd ourselves
        say("starting dockerd")
        _spawn(["dockerd"], settings.state_dir / "logs" / "dockerd.log", settings.state_dir / "dockerd.pid")
    _wait("docker engine", engine_running, 60, say)


# --- Registry ----------------------------------------------------------------------

_REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {addr}
"""


def registry_running(registry: str) -> bool:
    host = registry.split("/")[0]
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ensure_registry(settings: Settings, say: Say) -> None:
    addr = settings.registry.split("/")[0]
    if registry_running(settings.registry):
        say(f"registry {addr}: running")
        return
    if not addr.startswith(("127.0.0.1:", "localhost:")):
        raise InfraError(f"registry {addr} is not reachable, and only a loopback registry can be started locally")
    if not shutil.which("docker-registry") and _is_debian_root():
        _apt_install("docker-registry", say=say)
    if shutil.which("docker-registry"):
        root = settings.state_dir / "registry"
        root.mkdir(parents=True, exist_ok=True)
        config = root / "config.yml"
        config.write_text(_REGISTRY_CONFIG.format(root=root / "data", addr=addr))
        say(f"starting docker-registry on {addr}")
        _spawn(["docker-registry", "serve", str(config)], settings.state_dir / "logs" / "registry.log", root / "pid")
    else:
        say(f"starting the registry:2 container on {addr}")
        docker_client().containers.run(
            "registry:2",
            detach=True,
            name="mlbatch-registry",
            network_mode="host",
            environment={"REGISTRY_HTTP_ADDR": addr},
            labels=labels.checkout_labels(settings.state_dir),
            restart_policy={"Name": "always"},
        )
    _wait(f"registry {addr}", lambda: registry_running(settings.registry), 30, say)


# --- Base image ----------------------------------------------------------------------


def image_exists(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _pristine_ref(base: str) -> str:
    repo, _, tag = base.rpartition(":") if ":" in base.split("/")[-1] else (base, "", "latest")
    return f"{repo}:{tag}-mlbatch-pristine"


def _debootstrap_image(base: str, settings: Settings, say: Say) -> None:
    suite = base.split(":")[-1].split("-")[0]  # debian:bookworm-slim -> bookworm
    if not shutil.which("debootstrap"):
        if not _is_debian_root():
            raise InfraError(f"cannot pull {base} and debootstrap is missing: install it, or make {base} available")
        _apt_install("debootstrap", say=say)
    with tempfile.TemporaryDirectory(dir=settings.state_dir, prefix="rootfs-") as rootfs:
        say(f"building {base} offline with debootstrap ({suite}, about a minute)")
        subprocess.run(
            ["debootstrap", "--variant=minbase", suite, rootfs, _DEBIAN_MIRROR],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Debian's slim images drop docs; keep the image small the same way.
        for sub in ("usr/share/doc", "usr/share/man", "var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(Path(rootfs, sub), ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "--change", 'CMD ["bash"]', "-", base], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL
        )
        if tar.wait() != 0:
            raise InfraError("tar of the debootstrap root failed")


def layer_ca(client, base: str, pristine: str, ca_bundle: Path, digest: str, say: Say) -> None:
    say(f"adding the CA bundle {ca_bundle} to {base}")
    dockerfile = (
        f"FROM {pristine}\n"
        f"COPY ca-bundle.crt {CA_PATH}\n"
        # pip, requests (google-auth) and OpenSSL each read their own variable.
        f"ENV PIP_CERT={CA_PATH} REQUESTS_CA_BUNDLE={CA_PATH} SSL_CERT_FILE={CA_PATH}\n"
        f'LABEL {CA_LABEL}="{digest}"\n'
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("ca-bundle.crt", ca_bundle.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=base, rm=True)


def _pull_source(settings: Settings) -> str:
    """The pinned digest of the base (containers/base-images.yaml) when it has one, else its tag."""
    from mlbatch.local import base_images

    try:
        pin = base_images.load(settings.project_root / base_images.LOCK).get(settings.base_image)
    except BadInput:  # no lock in this folder: pull the tag
        pin = None
    return pin.ref if pin is not None else settings.base_image


def ensure_base_image(settings: Settings, say: Say) -> None:
    """Make `settings.base_image` usable by ordinary Dockerfiles, CA bundle included."""
    import docker.errors

    client = docker_client()
    base, pristine = settings.base_image, _pristine_ref(settings.base_image)
    if not image_exists(client, pristine):
        if image_exists(client, base) and CA_LABEL not in (client.images.get(base).labels or {}):
            client.images.get(base).tag(pristine)
        else:
            source = _pull_source(settings)
            try:
                say(f"pulling {source}")
                client.images.pull(source).tag(pristine)
            except docker.errors.APIError:
                say(f"cannot pull {source}")
                _debootstrap_image(pristine, settings, say)
    current = (client.images.get(base).labels or {}).get(CA_LABEL, "") if image_exists(client, base) else None
    if settings.ca_bundle is None:
        if current != "":  # missing, or carrying a CA layer no longer configured
            client.images.get(pristine).tag(base)
        say(f"base image {base}: ready")
        return
    digest = hashlib.sha256(settings.ca_bundle.read_bytes()).hexdigest()
    if current != digest:
        layer_ca(client, base, pristine, settings.ca_bundle, digest, say)
    say(f"base image {base}: ready (with CA bundle {settings.ca_bundle})")


# --- The base a release builds FROM (containers/base-images.yaml) --------------------------------


def build_base(settings: Settings, client, say: Say) -> base_images.BuildBase:
    """The base the release builds FROM (containers, the local bake), CA bundle layered on."""
    import docker.errors

    from mlbatch.local import base_images

    pin = base_images.load(settings.project_root / base_images.LOCK).get(settings.base_image)
    reason = f"{base_images.LOCK} has no entry for it"
    if pin is not None:
        try:
            if not image_exists(client, pin.ref):
                say(f"pulling the pinned base {pin.ref}")
                client.images.pull(pin.ref)
            return _with_ca(settings, client, pin, say)
        except docker.errors.APIError as exc:
            reason = f"the pinned {pin.ref} cannot be pulled: {exc.explanation or exc}"
    if settings.profile not in base_images.FALLBACK_PROFILES:
        raise MlbatchError(
            f"base image {settings.base_image}: {reason}; the {settings.profile} profile builds only from a pinned base"
        )
    say(
        f"base image {settings.base_image}: {reason}. Building FROM the local {settings.base_image} instead "
        f"(`invoke local.up`: pulled by tag, or built offline with debootstrap), which is NOT the pinned digest "
        f"({settings.profile} profile only)"
    )
    ensure_base_image(settings, say)
    return base_images.BuildBase(settings.base_image, pinned=False, image_id=client.images.get(settings.base_image).id)


def current_base(settings: Settings, client) -> base_images.BuildBase | None:
    """What `build_base` would give, from what the engine holds now, pulling and building nothing
    (`release --dry-run`); None when neither the pinned base nor the local one is there."""
    from mlbatch.local import base_images

    pin = base_images.load(settings.project_root / base_images.LOCK).get(settings.base_image)
    if pin is not None:
        ref = (
            base_images.layered_tag(pin, hashlib.sha256(settings.ca_bundle.read_bytes()).hexdigest())
            if settings.ca_bundle
            else pin.ref
        )
        if image_exists(client, ref):
            return base_images.BuildBase(ref, pinned=True, image_id=client.images.get(ref).id)
    if settings.profile in base_images.FALLBACK_PROFILES and image_exists(client, settings.base_image):
        return base_images.BuildBase(settings.base_image, pinned=False, image_id=client.images.get(settings.base_image).id)
    return None


def _with_ca(settings: Settings, client, pin: base_images.PinnedBase, say: Say) -> base_images.BuildBase:
    from mlbatch.local import base_images

    if settings.ca_bundle is None:
        return base_images.BuildBase(pin.ref, pinned=True, image_id=client.images.get(pin.ref).id)
    ca = hashlib.sha256(settings.ca_bundle.read_bytes()).hexdigest()
    layered = base_images.layered_tag(pin, ca)
    if not image_exists(client, layered):
        layer_ca(client, layered, pin.ref, settings.ca_bundle, ca, say)
    say(f"base image {settings.base_image}: the pinned {pin.ref}, with the CA bundle {settings.ca_bundle}")
    return base_images.BuildBase(layered, pinned=True, image_id=client.images.get(layered).id)


# --- The commands --------------------------------------------------------------------


def up(settings: Settings, say: Say) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_engine(settings, say)
    ensure_registry(settings, say)
    ensure_base_image(settings, say)
    folder = file_bucket_dir(settings.bucket)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        say(f"bucket {settings.bucket}: ready")


def status(settings: Settings) -> dict[str, str]:
    engine = engine_running()
    folder = file_bucket_dir(settings.bucket)
    out = {
        "docker engine": "running" if engine else "not running",
        f"registry {settings.registry}": "running" if registry_running(settings.registry) else "not running",
        f"bucket {settings.bucket}": "ready" if folder is None or folder.is_dir() else "missing",
    }
    if engine:
        client = docker_client()
        out[f"base image {settings.base_image}"] = "present" if image_exists(client, settings.base_image) else "missing"
        instances = client.containers.list(
            all=True, ignore_removed=True, filters={"label": labels.checkout_filter(settings.state_dir)}
        )
        out["mlbatch containers of this checkout"] = str(len(instances))
    return out


def down(settings: Settings, say: Say) -> None:
    """Stop what `up` started and remove this checkout's mlbatch containers (other checkouts
    on the same engine keep theirs); data and images stay."""
    if engine_running():
        for container in docker_client().containers.list(
            all=True, ignore_removed=True, filters={"label": labels.checkout_filter(settings.state_dir)}
        ):
            say(f"removing container {container.name}")
            container.remove(force=True)
    if _stop_pidfile(settings.state_dir / "registry" / "pid"):
        say("registry: stopped")
    if _stop_pidfile(settings.state_dir / "dockerd.pid"):
        say("dockerd: stopped")
