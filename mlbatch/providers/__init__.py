"""Where instances run: `local` (a container of the baked image) or `gce` (Compute Engine,
for the gcp profile and the test profile that points it at the fake Compute API).

Providers are imported lazily by `get_provider`, so the local path never imports the
Compute client.
"""

from __future__ import annotations

from mlbatch.core.settings import Settings
from mlbatch.providers.base import Provider


def get_provider(settings: Settings) -> Provider:
    if settings.is_local:
        from mlbatch.providers.local import LocalProvider

        return LocalProvider(settings)
    from mlbatch.providers.gce import GceProvider

    return GceProvider(settings)
