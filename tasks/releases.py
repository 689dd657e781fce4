"""`invoke release` and `invoke releases[.show]`: make a release, and read the released manifests."""

from invoke import Collection, task

from tasks.common import PROFILE_HELP, errors, settings


@task(help={"version": "release version, a git tag like v1.4.0 or v1.4.0-rc.1", "profile": PROFILE_HELP})
def release(c, version, profile=None):
    """Release VERSION: containers, code bundle, VM image, image tests, then the manifest."""
    from mlbatch.release.flow import release as do_release
    from mlbatch.ui import Steps, console

    steps = Steps()
    with errors():
        try:
            manifest = do_release(settings(c, profile), version, steps)
        finally:
            if steps.rows:
                console.print(steps.table(f"release {version}"))
        console.print(manifest.to_json(), markup=False)


@task(name="list", default=True, help={"profile": PROFILE_HELP})
def list_releases(c, profile=None):
    """List released versions, oldest first."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with errors():
        for m in manifest.iter_manifests(open_bucket(settings(c, profile).bucket)):
            print(f"{m.version}\t{m.created}\t{m.git_sha[:12]}\t{m.vm_image.name}")


@task(help={"version": "the release to print", "profile": PROFILE_HELP})
def show(c, version, profile=None):
    """Print the manifest of VERSION."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with errors():
        print(manifest.load(open_bucket(settings(c, profile).bucket), version).to_json(), end="")


ns = Collection("releases", list_releases, show)
