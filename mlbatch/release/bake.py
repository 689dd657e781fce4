"""Bake the VM image with Packer + Ansible, or reuse one baked from identical inputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from mlbatch.core import labels
from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.core.manifest import AGENT_FEATURES, VmImage
from mlbatch.core.scrub import scrub
from mlbatch.core.settings import Settings
from mlbatch.ui import Say

# The agent wheel carries the agent and the core it imports, nothing else of the package
# (the agent depends only on core: tests/unit/test_imports.py), so a change to the
# controller, the release flow or `runs.show` bakes no new image.
AGENT_SOURCES = ("mlbatch/__init__.py", "mlbatch/agent", "mlbatch/core")
# What `pip wheel` needs: the sources, pyproject.toml (entry point, dependencies) and the
# readme (the wheel's long description: text in its metadata, not hashed).
WHEEL_SOURCES = (*AGENT_SOURCES, "pyproject.toml", "README.md")
# What goes into the image: the wheel's code and build, the Packer template, the Ansible roles.
# A change to any of these means a new bake; to anything else, a reuse.
BAKE_INPUTS = ("packer", "ansible", *AGENT_SOURCES, "pyproject.toml")
LOCAL_IMAGE_REPOSITORY = "mlbatch-vm-image"
INPUT_HASH_LABEL = labels.INPUT_HASH
# The lines of a Packer + Ansible build worth showing as progress.
_PROGRESS = re.compile(
    r"Provisioning with \w+|TASK \[[^\]]+\]|PLAY RECAP"
    # googlecompute's long waits: the build VM, its ssh, the image
    r"|Creating instance|Waiting for SSH to become available|Connected to SSH!|Deleting instance|Creating image"
)


@dataclasses.dataclass(frozen=True)
class BakeSource:
    """What a bake starts from beyond the repository. In the input hash: a new base image (its
    digest), source image (a new debian-12 build) or CA bundle bakes anew rather than reusing
    an image made from the old one."""

    image: str  # the local bake's base image id (sha256:...), or the gcp bake's source image self link
    ca_bundle_sha256: str = ""  # "" when no extra CA bundle goes in

    @classmethod
    def of(cls, image: str, ca_bundle: Path | None) -> BakeSource:
        return cls(image, hashlib.sha256(ca_bundle.read_bytes()).hexdigest() if ca_bundle else "")


def input_hash(root: Path, source: BakeSource | None = None, gpu: bool = False) -> str:
    """sha256 over what goes into the image: BAKE_INPUTS of the checkout, where the bake starts
    from, and which image it is (the GPU image's differs: the same inputs, another image)."""
    digest = hashlib.sha256(b"gpu\0" if gpu else b"")
    if source is not None:
        digest.update(f"source-image\0{source.image}\0ca-bundle\0{source.ca_bundle_sha256}\0".encode())
    for name in BAKE_INPUTS:
        base = root / name
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# Packer >= 1.7 reads packer/required_plugins.pkr.hcl, which pins the googlecompute plugin
# exactly; CI installs this HashiCorp build (scripts/install-packer checks its published sha256).
PLUGINS_FROM = (1, 7, 0)
PINNED_PACKER = "1.15.4"
SOURCE_DISK_BUG = "hashicorp/packer#11511"


@dataclasses.dataclass(frozen=True)
class PackerBuild:
    version: tuple[int, int, int]
    path: str
    debian_package: str  # the version of Debian's `packer` package when it owns the binary (1.6.6+ds2-1+b1), else ""

    @property
    def text(self) -> str:
        debian = f" (Debian's package {self.debian_package})" if self.debian_package else ""
        return f"Packer {'.'.join(map(str, self.version))} at {self.path}{debian}"


def parse_packer_version(out: str) -> tuple[int, int, int]:
    """`packer version` prints `Packer v1.6.6` (and, when outdated, a line about the newest)."""
    match = re.search(r"^Packer v(\d+)\.(\d+)\.(\d+)", out, re.M)
    if not match:
        raise MlbatchError(f"cannot read Packer's version from {out!r}")
    return int(match[1]), int(match[2]), int(match[3])


def packer_version() -> tuple[int, int, int]:
    return packer_build().version


def packer_build() -> PackerBuild:
    """The Packer on PATH: its version (`packer version`) and whether Debian's package installed it.

    Debian's build prints the same `Packer v1.6.6` as HashiCorp's; dpkg tells them apart."""
    path = shutil.which("packer")
    if path is None:
        raise BadInput(f"packer is not on PATH: install HashiCorp's Packer {PINNED_PACKER} (scripts/install-packer)")
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
    return PackerBuild(parse_packer_version(out), path, _debian_package(path))


def _debian_package(path: str) -> str:
    """The version of Debian's `packer` package when it installed `path`, else ""."""
    if not shutil.which("dpkg-query"):
        return ""
    owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(path)], capture_output=True, text=True, check=False)
    if owner.returncode != 0 or owner.stdout.split(":", 1)[0] != "packer":
        return ""
    query = ["dpkg-query", "-W", "-f", "${Version}", "packer"]
    return subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()


def check_packer(settings: Settings, say: Say) -> None:
    """Refuse, before any side effect, a Packer whose googlecompute builder cannot release to GCP.

    Packer < 1.7 has the builder built in, unpinned; Debian's 1.6.6+ds build names the image's
    source disk without `projects/`, which Compute Engine refuses (hashicorp/packer#11511). The
    test profile's intercepting proxy repairs that one URL, so it may bake with it, and says so.
    The local profile's docker source works with either."""
    if settings.is_local:
        return
    build = packer_build()
    if build.version >= PLUGINS_FROM:
        return
    if settings.profile == "test":
        say(
            f"{build.text}: allowed on the test profile only, whose intercepting proxy repairs its "
            f"image insert's sourceDisk URL ({SOURCE_DISK_BUG})"
        )
        return
    raise BadInput(
        f"{build.text} cannot release to GCP: Packer before 1.7 cannot pin the googlecompute plugin "
        f"(packer/required_plugins.pkr.hcl), and Debian's 1.6.6+ds build names the image's source disk "
        f"without projects/, which Compute Engine refuses ({SOURCE_DISK_BUG}). "
        f"Fix: install HashiCorp's Packer {PINNED_PACKER} with scripts/install-packer (checked against its "
        "published sha256) and put its folder first on PATH; the bake runs `packer init packer/` for the pinned plugins"
    )


def packer_template(root: Path) -> list[str]:
    """Packer 1.6 reads the template file alone; later versions the folder with required_plugins."""
    packer_dir = root / "packer"
    return [str(packer_dir / "mlbatch.pkr.hcl")] if packer_version() < PLUGINS_FROM else [str(packer_dir)]


def copy_sources(root: Path, names: tuple[str, ...], to: Path) -> Path:
    """`names` (files and folders of `root`) copied under `to`, without Python's caches."""
    for name in names:
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        if (root / name).is_dir():
            shutil.copytree(root / name, to / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(root / name, to / name)
    return to


def build_wheel(root: Path, out_dir: Path) -> Path:
    """The agent wheel, built from a clean copy of its sources: setuptools packs whatever a
    checkout's build/lib holds, so a module since moved or removed (fakes) would ship."""
    with tempfile.TemporaryDirectory(prefix="mlbatch-wheel-") as tmp:
        source = copy_sources(root, WHEEL_SOURCES, Path(tmp))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir), str(source)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    (wheel,) = out_dir.glob("mlbatch-*.whl")
    return wheel


@dataclasses.dataclass(frozen=True)
class BakeRequest:
    version: str
    git_sha: str
    image_name: str
    image_family: str
    base_image: str
    ca_bundle: Path | None
    source: BakeSource | None = None  # in the input hash; None: the repository's inputs alone
    gpu: bool = False  # the GPU image: Ansible's gpu role runs (the NVIDIA driver)

    def variables(self, wheel: Path, wheel_sha256: str, digest: str, manifest_path: Path) -> dict[str, str]:
        return {
            "gpu": str(self.gpu).lower(),
            "version": self.version,
            "git_sha": self.git_sha,
            "image_name": self.image_name,
            "image_family": self.image_family,
            "input_hash": digest,
            "agent_wheel": str(wheel),
            "agent_wheel_sha256": wheel_sha256,
            "ca_bundle": str(self.ca_bundle or ""),
            "manifest_path": str(manifest_path),
            "base_image": self.base_image,
        }


def created_at(timestamp: str) -> dt.datetime:
    """An image's creation time as Docker (`2026-11-30T12:33:12.123456789Z`) or Compute Engine
    (`2026-11-30T04:33:12.123-08:00`) write it."""
    return dt.datetime.fromisoformat(re.sub(r"\.\d+", "", timestamp).replace("Z", "+00:00"))


def too_old(created: str, max_age_days: int, name: str, say: Say) -> bool:
    """Whether an image with the same inputs is past max_image_age_days: then a release bakes
    afresh, and the image gets Debian's fixes of the day (docs/architecture.md, "Updates")."""
    age = dt.datetime.now(dt.UTC) - created_at(created)
    if age <= dt.timedelta(days=max_age_days):
        return False
    say(f"image {name} has the same inputs but was baked {age.days} days ago (max_image_age_days {max_age_days}): baking afresh")
    return True


def find_local_image(client, digest: str, max_age_days: int, say: Say) -> VmImage | None:
    """The newest image baked from the same inputs, unless it is past max_age_days."""
    found = []
    for image in client.images.list(filters={"label": f"{INPUT_HASH_LABEL}={digest}"}):
        found_labels = image.labels or {}
        name = found_labels.get(labels.IMAGE_NAME, "")
        if name and f"{LOCAL_IMAGE_REPOSITORY}:{name}" in image.tags:
            found.append((created_at(image.attrs["Created"]), image.attrs["Created"], name, found_labels))
    if not found:
        return None
    _, created, name, found_labels = max(found)
    if too_old(created, max_age_days, name, say):
        return None
    return VmImage(
        name=name,
        ref=f"{LOCAL_IMAGE_REPOSITORY}:{name}",
        input_hash=digest,
        baked_by_version=found_labels.get(labels.VERSION, ""),
        agent_wheel_sha256=found_labels.get(labels.AGENT_WHEEL_SHA256, ""),
        agent_features=AGENT_FEATURES,  # found or baked by this checkout's input hash: this agent
    )


@dataclasses.dataclass(frozen=True)
class Baked:
    build: dict  # the manifest post-processor's last build
    input_hash: str
    agent_wheel_sha256: str


def run_packer(
    root: Path,
    request: BakeRequest,
    source: str,
    say: Say,
    extra_vars: dict[str, str] | None = None,
) -> Baked:
    """Run `packer build -only=<source>` (extra_vars: the source's own variables). No secret goes to Packer,
    by argument or environment: the bake VM's pre-pull logs in with the VM's own token (ansible/roles/prepull)."""
    digest = input_hash(root, request.source, request.gpu)
    with tempfile.TemporaryDirectory(prefix="mlbatch-bake-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        wheel_sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        say(f"agent wheel {wheel.name}: sha256 {wheel_sha256}")
        manifest_path = Path(tmp, "packer-manifest.json")
        argv = ["packer", "build", "-color=false", f"-only={source}"]
        for key, value in {**request.variables(wheel, wheel_sha256, digest, manifest_path), **(extra_vars or {})}.items():
            argv += ["-var", f"{key}={value}"]
        template = packer_template(root)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_NOCOLOR": "1",
            "PACKER_NO_COLOR": "1",
        }
        if template[0].endswith("packer"):
            subprocess.run(["packer", "init", *template], check=True, env=env)
        _stream(argv + template, env, say)
        data = json.loads(manifest_path.read_text())
    return Baked(data["builds"][-1], digest, wheel_sha256)


def _stream(argv: list[str], env: dict[str, str], say: Say) -> None:
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip())
        if progress := _PROGRESS.search(line):
            say(scrub(progress.group(0)))
    if proc.wait() != 0:
        raise MlbatchError("packer build failed; its last lines:\n" + scrub("\n".join(tail)))


def bake_local(client, root: Path, request: BakeRequest, say: Say) -> VmImage:
    """Bake with the docker source; the image is tagged by its name in LOCAL_IMAGE_REPOSITORY."""
    baked = run_packer(root, request, "docker.local", say)
    ref = f"{LOCAL_IMAGE_REPOSITORY}:{request.image_name}"
    client.images.get(baked.build["artifact_id"]).tag(LOCAL_IMAGE_REPOSITORY, tag=request.image_name)
    return VmImage(
        name=request.image_name,
        ref=ref,
        input_hash=baked.input_hash,
        baked_by_version=request.version,
        agent_wheel_sha256=baked.agent_wheel_sha256,
        agent_features=AGENT_FEATURES,  # found or baked by this checkout's input hash: this agent
    )
