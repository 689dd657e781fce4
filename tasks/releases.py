"""`invoke release` and `invoke releases[.show]`: make a release, and read the released manifests."""

from invoke import Collection

from mlbatch.core.options import Format
from tasks.common import FORMAT_HELP, PROFILE_HELP, errors, settings, task


@task(
    help={
        "version": "release version, a git tag like v1.4.0 or v1.4.0-rc.1",
        "profile": PROFILE_HELP,
        "dry_run": "check everything and print the plan (containers, code bundle, image: reused or baked); change nothing",
        "format": "table: end with the steps' summary; json: then print the manifest (with --dry-run: the plan)",
    }
)
def release(c, version, profile=None, dry_run=False, format: Format = "table"):
    """Release VERSION: containers, code bundle, VM image, image tests, then the manifest."""
    from mlbatch.release.flow import release as do_release
    from mlbatch.ui import Steps, console, emit

    if dry_run:
        from mlbatch.release.plan import plan_release, render_plan

        with errors():
            emit(format, plan_release(settings(c, profile), version), render_plan)
        return
    steps = Steps()
    with errors():
        try:
            manifest = do_release(settings(c, profile), version, steps)
        finally:
            if steps.rows:
                console.print(steps.table(f"release {version}"))
    if format == "json":
        print(manifest.to_json(), end="")


@task(name="list", default=True, help={"format": FORMAT_HELP, "profile": PROFILE_HELP})
def list_releases(c, format: Format = "table", profile=None):
    """List released versions, oldest first."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release import views
    from mlbatch.ui import emit

    with errors():
        rows = views.release_rows(open_bucket(settings(c, profile).bucket))
    emit(format, rows, views.render_releases)


@task(help={"version": "the release to show, e.g. v1.4.0", "format": FORMAT_HELP + " (the manifest)", "profile": PROFILE_HELP})
def show(c, version, format: Format = "table", profile=None):
    """Show the manifest of VERSION: image, containers by digest, code bundle, jobs."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket
    from mlbatch.release import views
    from mlbatch.ui import emit

    with errors():
        data = views.release_data(manifest.load(open_bucket(settings(c, profile).bucket), version))
    emit(format, data, views.render_release)


ns = Collection("releases", list_releases, show)
