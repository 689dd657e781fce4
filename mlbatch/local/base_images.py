"""Base images by digest (containers/base-images.yaml): the one file that pins what the
containers and the local bake start from, its refresh, and the base a release builds FROM.

A profile's `base_image` names an entry (`debian:bookworm-slim`); the entry holds the tag it
was resolved from and the digest. `refresh` asks the registry (through the engine's
distribution endpoint, which speaks the registry API with the engine's credentials) what
each tag names today. `build_base` gives the release its base: the pinned digest (pulled if
need be) with the profile's CA bundle layered on, or, where that digest cannot be had and the
profile allows it (local, test), the local image `invoke local.up` made, said as such.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from pathlib import Path

import yaml

from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.core.settings import Settings
from mlbatch.ui import Say

LOCK = Path("containers") / "base-images.yaml"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Profiles that may build FROM the local base when the pinned digest cannot be pulled: this
# workplace reaches no public registry, and debootstrap builds the base offline.
FALLBACK_PROFILES = ("local", "test")
LAYERED_REPOSITORY = "mlbatch-base"


@dataclasses.dataclass(frozen=True)
class PinnedBase:
    name: str  # what settings and Dockerfiles call it: debian:bookworm-slim
    tag: str  # what refresh resolves: docker.io/library/debian:bookworm-slim
    digest: str  # sha256:... of what the tag named when resolved
    resolved: str = ""  # when, and how

    @property
    def ref(self) -> str:
        """REPOSITORY@sha256:..., the pull that gets exactly these bytes."""
        repository = self.tag.rsplit(":", 1)[0] if ":" in self.tag.rsplit("/", 1)[-1] else self.tag
        return f"{repository}@{self.digest}"


@dataclasses.dataclass(frozen=True)
class BuildBase:
    """The base a release builds FROM: its reference, whether it is the pinned digest, and its image id."""

    ref: str
    pinned: bool
    image_id: str


def load(path: Path) -> dict[str, PinnedBase]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: cannot be read as YAML ({exc})") from None
    pins = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("tag"), str) or not _DIGEST.match(str(entry.get("digest"))):
            raise BadInput(f"{path}: entry {name!r} must be {{tag: REPOSITORY:TAG, digest: sha256:<64 hex>, resolved: ...}}")
        pins[str(name)] = PinnedBase(str(name), entry["tag"], entry["digest"], str(entry.get("resolved", "")))
    return pins


def _write(path: Path, pins: dict[str, PinnedBase]) -> None:
    text = path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    body = {p.name: {"tag": p.tag, "digest": p.digest, "resolved": p.resolved} for p in pins.values()}
    path.write_text(header + yaml.safe_dump(body, sort_keys=False, width=200))


def refresh(path: Path, client, say: Say) -> list[str]:
    """Resolve every entry's tag to its digest now; rewrite the lock; the names whose digest changed."""
    import docker.errors

    if not path.is_file():
        raise BadInput(f"invalid --lock {str(path)!r}: expected a file like {LOCK}")
    pins = load(path)
    changed = []
    today = dt.datetime.now(dt.UTC).date().isoformat()
    for name, pin in pins.items():
        try:
            digest = client.images.get_registry_data(pin.tag).id
        except docker.errors.APIError as exc:
            raise MlbatchError(f"cannot resolve {pin.tag} for {name}: {exc.explanation or exc}") from None
        if digest != pin.digest:
            say(f"{name}: {pin.tag} now names {digest} (was {pin.digest})")
            pins[name] = dataclasses.replace(pin, digest=digest, resolved=f"{today} (invoke images.refresh-bases)")
            changed.append(name)
        else:
            say(f"{name}: {pin.tag} still names {digest}")
    _write(path, pins)
    return changed


def check(settings: Settings) -> None:
    """Before any side effect: the gcp profile builds only from a pinned base."""
    if settings.profile in FALLBACK_PROFILES:
        return
    if settings.base_image not in load(settings.project_root / LOCK):
        raise BadInput(
            f"base_image {settings.base_image!r} has no digest in {LOCK}: the {settings.profile} profile builds only from "
            f"a pinned base; add an entry (tag and digest) and run `invoke images.refresh-bases`"
        )


def _present(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_base(settings: Settings, client, say: Say) -> BuildBase:
    """The base the release builds FROM (containers, the local bake), CA bundle layered on."""
    import docker.errors

    from mlbatch.local import infra

    pin = load(settings.project_root / LOCK).get(settings.base_image)
    reason = f"{LOCK} has no entry for it"
    if pin is not None:
        try:
            if not _present(client, pin.ref):
                say(f"pulling the pinned base {pin.ref}")
                client.images.pull(pin.ref)
            return _with_ca(settings, client, pin, say)
        except docker.errors.APIError as exc:
            reason = f"the pinned {pin.ref} cannot be pulled: {exc.explanation or exc}"
    if settings.profile not in FALLBACK_PROFILES:
        raise MlbatchError(
            f"base image {settings.base_image}: {reason}; the {settings.profile} profile builds only from a pinned base"
        )
    say(
        f"base image {settings.base_image}: {reason}. Building FROM the local {settings.base_image} instead "
        f"(`invoke local.up`: pulled by tag, or built offline with debootstrap), which is NOT the pinned digest "
        f"({settings.profile} profile only)"
    )
    infra.ensure_base_image(settings, say)
    return BuildBase(settings.base_image, pinned=False, image_id=client.images.get(settings.base_image).id)


def _layered_tag(pin: PinnedBase, ca_sha256: str) -> str:
    return f"{LAYERED_REPOSITORY}:{pin.digest.removeprefix('sha256:')[:16]}-ca-{ca_sha256[:16]}"


def current_base(settings: Settings, client) -> BuildBase | None:
    """What `build_base` would give, from what the engine holds now, pulling and building nothing
    (`release --dry-run`); None when neither the pinned base nor the local one is there."""
    pin = load(settings.project_root / LOCK).get(settings.base_image)
    if pin is not None:
        ref = _layered_tag(pin, hashlib.sha256(settings.ca_bundle.read_bytes()).hexdigest()) if settings.ca_bundle else pin.ref
        if _present(client, ref):
            return BuildBase(ref, pinned=True, image_id=client.images.get(ref).id)
    if settings.profile in FALLBACK_PROFILES and _present(client, settings.base_image):
        return BuildBase(settings.base_image, pinned=False, image_id=client.images.get(settings.base_image).id)
    return None


def _with_ca(settings: Settings, client, pin: PinnedBase, say: Say) -> BuildBase:
    from mlbatch.local import infra

    if settings.ca_bundle is None:
        return BuildBase(pin.ref, pinned=True, image_id=client.images.get(pin.ref).id)
    ca = hashlib.sha256(settings.ca_bundle.read_bytes()).hexdigest()
    layered = _layered_tag(pin, ca)
    if not _present(client, layered):
        infra.layer_ca(client, layered, pin.ref, settings.ca_bundle, ca, say)
    say(f"base image {settings.base_image}: the pinned {pin.ref}, with the CA bundle {settings.ca_bundle}")
    return BuildBase(layered, pinned=True, image_id=client.images.get(layered).id)
