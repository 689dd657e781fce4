"""invoke wiring only: each task parses its options and calls the mlbatch package.

    invoke --list            all tasks;  invoke --help TASK  its options
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent


def _settings(c):
    from mlbatch.core.settings import load_settings

    return load_settings(dict(c.config.get("mlbatch", {})), ROOT)


@contextlib.contextmanager
def _errors():
    """MlbatchError -> a clear message and its reserved exit code (see README)."""
    from mlbatch.core.errors import MlbatchError

    try:
        yield
    except MlbatchError as exc:
        raise Exit(f"mlbatch: {exc}", code=int(exc.exit_code)) from None


# --- local infrastructure ----------------------------------------------------------


@task
def up(c):
    """Start what the local profile needs: Docker engine, registry, base image, bucket."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.up(_settings(c), say)


@task
def status(c):
    """Show the local profile's infrastructure."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        for what, state in infra.status(_settings(c)).items():
            say(f"{what}: {state}")


@task
def down(c):
    """Stop the registry (and dockerd if local.up started it); remove mlbatch containers."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with _errors():
        infra.down(_settings(c), say)


local = Collection("local", up, status, down)


# --- release -------------------------------------------------------------------------


@task(help={"version": "release version, a git tag like v1.4.0 or v1.4.0-rc.1"})
def release(c, version):
    """Release VERSION: containers, code bundle, VM image, image tests, then the manifest."""
    from mlbatch.release.flow import release as do_release
    from mlbatch.ui import Steps, console

    steps = Steps()
    with _errors():
        try:
            manifest = do_release(_settings(c), version, steps)
        finally:
            if steps.rows:
                console.print(steps.table(f"release {version}"))
        console.print(manifest.to_json(), markup=False)


@task(name="list", default=True)
def list_releases(c):
    """List released versions, oldest first."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        for m in manifest.iter_manifests(open_bucket(_settings(c).bucket)):
            print(f"{m.version}\t{m.created}\t{m.git_sha[:12]}\t{m.vm_image.name}")


@task(help={"version": "the release to print"})
def show(c, version):
    """Print the manifest of VERSION."""
    from mlbatch.core import manifest
    from mlbatch.core.bucket import open_bucket

    with _errors():
        print(manifest.load(open_bucket(_settings(c).bucket), version).to_json(), end="")


releases = Collection("releases", list_releases, show)

ns = Collection(release, local, releases)
