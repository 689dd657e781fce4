"""`invoke release --dry-run`: every check a release makes before its first side effect
(`flow.check_release`: version, Packer, catalog, code links, not yet released), then the plan
of each step: the containers and their tags, the code bundle (built in memory: its sha256
and size), the VM image (reused by input hash, or baked: with which Packer source), the image
tests and the manifest's key. Nothing is pushed, uploaded, baked or written; the preflight
of the gcp APIs and permissions is `invoke doctor`'s."""

from __future__ import annotations

from typing import Any

from mlbatch.core import bundle
from mlbatch.core import manifest as manifests
from mlbatch.core.catalog import container_names
from mlbatch.core.names import image_name
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version
from mlbatch.local import infra
from mlbatch.local.infra import docker_client
from mlbatch.release import bake
from mlbatch.release.flow import check_release, git_sha
from mlbatch.release.targets import get_target
from mlbatch.ui import columns


def plan_release(settings: Settings, version_text: str) -> dict[str, Any]:
    version, bucket, catalog = check_release(settings, version_text)
    root = settings.project_root
    target = get_target(settings)
    made = bundle.build_bundle(root / "batch_code")
    base = infra.current_base(settings, docker_client())
    # The input hash names the base (local) or the source image (gcp); a base not pulled yet is baked from.
    digest = bake.input_hash(root, target.bake_source(base)) if base or not settings.is_local else ""
    image = target.find_image(digest) if digest else None
    source = "docker.local" if settings.is_local else "googlecompute.vm"
    return {
        "dry_run": True,
        "version": version,
        "profile": settings.profile,
        "target": target.name,
        "git_sha": git_sha(root),
        "base_image": {"ref": base.ref if base else None, "pinned": base.pinned if base else None},
        "containers": [
            {"name": name, "tag": f"{settings.registry}/{name}:{version}"} for name in container_names(root / "containers")
        ],
        "code": {
            "key": f"batch_code/{version}/batch_code.tar.gz",
            "sha256": made.sha256,
            "size": len(made.data),
            "clean": made.clean,
            "tree_state": made.tree_state,
        },
        "vm_image": {
            "input_hash": digest,
            "reuse": image.ref if image else None,
            "bake": None if image else image_name(parse_version(version).slug, family=settings.image_family),
            "packer": None if image else f"packer build -only={source} packer/",
        },
        "image_tests": "tests/image (testinfra) against the " + ("reused image" if image else "candidate, then promote"),
        "manifest": bucket.url(manifests.manifest_key(version)),
        "jobs": sorted(catalog),
    }


def render_plan(data: dict[str, Any]) -> str:
    code, image = data["code"], data["vm_image"]
    rows = [
        ("profile", f"{data['profile']} (target {data['target']}), git {data['git_sha'][:12]}"),
        ("base image", _base_text(data["base_image"])),
        *((f"container {c['name']}", f"build and push {c['tag']}") for c in data["containers"]),
        ("code bundle", f"{code['key']}: {code['size']} bytes, sha256 {code['sha256'][:16]}…"),
        ("vm image", f"reuse {image['reuse']}" if image["reuse"] else f"bake {image['bake']} ({image['packer']})"),
        ("image tests", data["image_tests"]),
        ("manifest", data["manifest"]),
        ("jobs", " ".join(data["jobs"])),
    ]
    return columns(("DRY RUN", f"release {data['version']}: nothing was pushed, uploaded, baked or written"), rows)


def _base_text(base: dict[str, Any]) -> str:
    if base["ref"] is None:
        return "not on this engine yet: the release pulls the pinned digest (containers/base-images.yaml)"
    return f"{base['ref']} ({'the pinned digest' if base['pinned'] else 'NOT the pinned digest: the local fallback'})"
