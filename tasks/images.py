"""`invoke images[.prune]`: the VM images mlbatch baked, and their retention."""

from invoke import Collection, task

from tasks.common import PROFILE_HELP, errors, settings


@task(name="list", default=True, help={"profile": PROFILE_HELP})
def list_images(c, profile=None):
    """List the VM images mlbatch baked, with the releases whose manifests name them."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.retention import image_uses
    from mlbatch.release.targets import get_target

    with errors():
        s = settings(c, profile)
        for use in image_uses(get_target(s), open_bucket(s.bucket)):
            print(f"{use.image.name}\t{use.image.status}\t{use.image.created}\t{','.join(use.versions) or '-'}")


@task(
    help={
        "keep": "keep the images named by the last KEEP releases (pre-releases not counted; newer ones kept; default 3)",
        "apply": "deprecate and delete; without it, only say what would be done (a dry run)",
        "min_age_hours": "never retire an image younger than this many hours (a release in progress); default 24",
        "profile": PROFILE_HELP,
    }
)
def prune(c, keep=3, apply=False, min_age_hours=24, profile=None):
    """Deprecate, then delete, baked images that no manifest of the last KEEP releases names."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release.retention import prune as do_prune
    from mlbatch.release.targets import get_target
    from mlbatch.ui import say

    with errors():
        s = settings(c, profile)
        do_prune(get_target(s), open_bucket(s.bucket), keep, min_age_hours, apply, say)


ns = Collection("images", list_images, prune)
