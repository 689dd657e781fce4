"""A release manifest in a bucket without building anything, for tests of what reads it."""

from __future__ import annotations

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import Bucket
from mlbatch.core.catalog import parse_catalog
from mlbatch.core.manifest import CodeBundle, Container, Manifest, VmImage

CATALOG = """
jobs:
  sleep:
    container: trainer
    command: [python, sleep.py]
    spot: true
    max_preemption_retries: 2
    timeout_seconds: 600
    params:
      seconds: {type: int, default: 1}
  spot-then-on-demand:
    container: trainer
    command: [python, train.py]
    spot: true
    max_preemption_retries: 3
    on_demand_after_preemptions: 2
  no-retries:
    container: trainer
    command: [python, train.py]
    spot: true
    max_preemption_retries: 0
"""


def publish_release(
    bucket: Bucket, version: str = "v1.0.0", catalog: str = CATALOG, agent_features: tuple[str, ...] = manifests.AGENT_FEATURES
) -> Manifest:
    """Publish a manifest whose pins point at nothing real (no instance pulls them in these tests);
    `agent_features`: what its image's agent does (() as in a release made before they were recorded)."""
    manifest = Manifest(
        version=version,
        git_sha="0" * 40,
        created="2026-11-25T00:00:00+00:00",
        profile="local",
        vm_image=VmImage(
            "mlbatch-v1-0-0-1", "mlbatch-vm-image:mlbatch-v1-0-0-1", "h" * 64, version, agent_features=agent_features
        ),
        containers={"trainer": Container("trainer", "127.0.0.1:5000/trainer", "sha256:" + "0" * 64)},
        code=CodeBundle(f"{bucket.uri}/batch_code/{version}/batch_code.tar.gz", "f" * 64, 10),
        jobs=parse_catalog(catalog),
    )
    manifests.publish(bucket, manifest)
    return manifest
