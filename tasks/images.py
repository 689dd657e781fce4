"""`invoke images[.prune]`: the VM images mlbatch baked, and their retention."""

from invoke import Collection

from mlbatch.core.options import Format
from tasks.common import FORMAT_HELP, PROFILE_HELP, ROOT, errors, settings, task


@task(name="list", default=True, help={"format": FORMAT_HELP, "profile": PROFILE_HELP})
def list_images(c, format: Format = "table", profile=None):
    """List the VM images mlbatch baked, with the releases whose manifests name them."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release import views
    from mlbatch.release.retention import image_uses
    from mlbatch.release.targets import get_target
    from mlbatch.ui import emit

    with errors():
        s = settings(c, profile)
        rows = views.image_rows(image_uses(get_target(s), open_bucket(s.bucket)))
    emit(format, rows, views.render_images)


@task(
    help={
        "keep": "a whole number: keep the images named by the last KEEP releases (pre-releases not counted; newer "
        "ones kept; default 3)",
        "apply": "deprecate and delete; without it, only say what would be done (a dry run)",
        "min_age_hours": "a number: never retire an image younger than this many hours (a release in progress); default 24",
        "profile": PROFILE_HELP,
    }
)
def prune(c, keep: int = 3, apply=False, min_age_hours: float = 24, profile=None):
    """Deprecate, then delete, baked images that no manifest of the last KEEP releases names."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.retention import prune as do_prune
    from mlbatch.release.targets import get_target
    from mlbatch.ui import say

    with errors():
        s = settings(c, profile)
        do_prune(get_target(s), open_bucket(s.bucket), keep, min_age_hours, apply, say)


@task(name="refresh-bases", help={"lock": "the lock file to refresh (default containers/base-images.yaml)"})
def refresh_bases(c, lock=None):
    """Resolve each base image's tag to the digest it names today (the registry API) and rewrite the lock."""
    from pathlib import Path

    from mlbatch.local import base_images
    from mlbatch.local.infra import docker_client
    from mlbatch.ui import say

    with errors():
        path = Path(lock) if lock else ROOT / base_images.LOCK
        changed = base_images.refresh(path, docker_client(), say)
    say(f"{len(changed)} digest(s) changed in {path}" + ("; commit it: the next release bakes anew" if changed else ""))


ns = Collection("images", list_images, prune, refresh_bases)
