"""Base images by digest (containers/base-images.yaml): the one file that pins what the
containers and the local bake start from, and its refresh (`mlbatch.local.infra.build_base`
gives a release its base from it).

A profile's `base_image` names an entry (`debian:bookworm-slim`); the entry holds the tag it
was resolved from and the digest. `refresh` asks the registry (through the engine's
distribution endpoint, which speaks the registry API with the engine's credentials) what
each tag names today.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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


def layered_tag(pin: PinnedBase, ca_sha256: str) -> str:
    return f"{LAYERED_REPOSITORY}:{pin.digest.removeprefix('sha256:')[:16]}-ca-{ca_sha256[:16]}"
