"""What `invoke releases`, `releases.show` and `images` print: a dict per row for
`--format json`, aligned columns under a header for people (URIs and self links whole, for
copy and paste)."""

from __future__ import annotations

from typing import Any

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket
from mlbatch.core.manifest import Manifest
from mlbatch.core.versions import parse_version
from mlbatch.release.retention import ImageUse
from mlbatch.ui import columns


def release_rows(bucket: Bucket) -> list[dict[str, Any]]:
    """Released versions, oldest first."""
    return [
        {
            "version": m.version,
            "created": m.created,
            "git_sha": m.git_sha,
            "pre_release": bool(parse_version(m.version).pre),
            "vm_image": m.vm_image.name,
            "jobs": sorted(m.jobs),
        }
        for m in manifests.iter_manifests(bucket)
    ]


def render_releases(rows: list[dict[str, Any]]) -> str:
    lines = [(r["version"], r["created"][:19], r["git_sha"][:12], r["vm_image"], str(len(r["jobs"]))) for r in rows]
    return columns(("VERSION", "CREATED", "GIT", "VM IMAGE", "JOBS"), lines, leave_out=("GIT", "JOBS", "CREATED"))


def render_release(data: dict[str, Any]) -> str:
    """One release (its manifest as `--format json` prints it) as key/value lines."""
    code, image = data["code"], data["vm_image"]
    rows = [
        ("created", data["created"]),
        ("git", data["git_sha"]),
        ("profile", data["profile"]),
        ("vm image", image["name"]),
        ("image ref", image["ref"]),
        ("baked by", image["baked_by_version"]),
        *((f"container {name}", f"{c['repository']}@{c['digest']}") for name, c in sorted(data["containers"].items())),
        ("code", code["uri"]),
        ("code sha256", code["sha256"]),
        (
            "code size",
            f"{code['size']} bytes, " + ("clean tree" if code.get("clean") else code.get("tree_state") or "tree state unknown"),
        ),
        ("jobs", " ".join(sorted(data["jobs"]))),
    ]
    return columns(("RELEASE", data["version"]), rows)


def release_data(manifest: Manifest) -> dict[str, Any]:
    import json

    return json.loads(manifest.to_json())


def image_rows(uses: list[ImageUse]) -> list[dict[str, Any]]:
    return [
        {
            "name": u.image.name,
            "status": u.image.status,
            "created": u.image.created,
            "ref": u.image.ref,
            "releases": list(u.versions),
        }
        for u in uses
    ]


def render_images(rows: list[dict[str, Any]]) -> str:
    lines = [(r["name"], r["status"], r["created"][:19], ",".join(r["releases"]) or "-") for r in rows]
    return columns(("IMAGE", "STATUS", "CREATED", "RELEASES"), lines, leave_out=("CREATED",))
