"""Where a release goes: `local` (loopback registry, Docker image) or `gcp` (Artifact
Registry, GCE image; also the `test` profile against emulators). Imported lazily, so the
local path never imports the Google clients."""

from __future__ import annotations

from mlbatch.core.settings import Settings
from mlbatch.release.targets.base import ReleaseTarget


def get_target(settings: Settings) -> ReleaseTarget:
    if settings.is_local:
        from mlbatch.release.targets.local import LocalTarget

        return LocalTarget(settings)
    from mlbatch.release.targets.gcp import GcpTarget

    return GcpTarget(settings)
