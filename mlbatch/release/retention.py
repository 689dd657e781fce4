"""Which baked images the releases still name, and retiring the rest (`invoke images`, `images.prune`).

An image is kept when a manifest of one of the last N releases names it: a run of any of
those releases must still boot. Pre-releases do not count among the N (or `latest` could
lose its image to a run of release candidates); those newer than the newest release are
kept. Everything else baked by mlbatch is retired: deprecated (so nothing new boots from
it) and then deleted. A dry run by default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket
from mlbatch.core.errors import BadInput
from mlbatch.release.targets.base import BakedImage, ReleaseTarget
from mlbatch.ui import Say


@dataclasses.dataclass(frozen=True)
class ImageUse:
    image: BakedImage
    versions: tuple[str, ...]  # releases whose manifest names the image, oldest first


def image_uses(target: ReleaseTarget, bucket: Bucket) -> list[ImageUse]:
    by_name: dict[str, list[str]] = {}
    for manifest in manifests.iter_manifests(bucket):
        by_name.setdefault(manifest.vm_image.name, []).append(manifest.version)
    return [ImageUse(image, tuple(by_name.get(image.name, ()))) for image in target.list_images()]


def _age_hours(image: BakedImage, now: dt.datetime) -> float:
    created = dt.datetime.fromisoformat(image.created.replace("Z", "+00:00"))
    return (now - (created if created.tzinfo else created.replace(tzinfo=dt.UTC))).total_seconds() / 3600


def kept_releases(versions: list[str], keep: int) -> list[str]:
    """The last `keep` releases (pre-releases do not count, so the one `--version latest`
    resolves to is always among them) and every pre-release newer than the newest release
    (the next release's candidates, which runs may name)."""
    released = manifests.releases_only(versions)
    newer = versions[versions.index(released[-1]) + 1 :] if released else versions
    return released[-keep:] + newer


def prune_plan(
    target: ReleaseTarget, bucket: Bucket, keep: int, min_age_hours: float
) -> tuple[list[tuple[ImageUse, str]], list[ImageUse]]:
    """(kept with the reason, to retire): kept are the images the last `keep` releases name, and
    images younger than `min_age_hours` (a release in progress has baked, not yet published)."""
    if keep < 1:
        raise BadInput(f"invalid --keep {keep}: expected at least 1 (the newest release must stay runnable)")
    if min_age_hours < 0:
        raise BadInput(f"invalid --min-age-hours {min_age_hours}: expected 0 or more")
    kept_versions = set(kept_releases(manifests.list_versions(bucket), keep))
    now = dt.datetime.now(dt.UTC)
    kept, retire = [], []
    for use in image_uses(target, bucket):
        if kept_versions.intersection(use.versions):
            kept.append((use, f"named by {', '.join(sorted(kept_versions.intersection(use.versions)))}"))
        elif _age_hours(use.image, now) < min_age_hours:
            kept.append((use, f"younger than {min_age_hours:g} h: a release may be in progress"))
        else:
            retire.append(use)
    return kept, retire


def prune(target: ReleaseTarget, bucket: Bucket, keep: int, min_age_hours: float, apply: bool, say: Say) -> list[ImageUse]:
    kept, retire = prune_plan(target, bucket, keep, min_age_hours)
    for use, reason in kept:
        say(f"keep {use.image.name} ({reason})")
    for use in retire:
        named = f"named only by {', '.join(use.versions)}" if use.versions else "named by no release"
        if apply:
            target.retire_image(use.image, say)
        else:
            say(f"would deprecate and delete {use.image.name} ({named})")
    if not apply and retire:
        say(f"dry run: {len(retire)} image(s) to retire; run again with --apply to do it")
    return retire
