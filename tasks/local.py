"""`invoke local.*`: the local profile's infrastructure (Docker engine, registry, base image, bucket)."""

from invoke import Collection

from tasks.common import PROFILE_HELP, errors, settings, task


@task(help={"profile": PROFILE_HELP})
def up(c, profile=None):
    """Start what the local profile needs: Docker engine, registry, base image, bucket."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with errors():
        infra.up(settings(c, profile), say)


@task(help={"profile": PROFILE_HELP})
def status(c, profile=None):
    """Show the local profile's infrastructure."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with errors():
        for what, state in infra.status(settings(c, profile)).items():
            say(f"{what}: {state}")


@task(help={"profile": PROFILE_HELP})
def down(c, profile=None):
    """Stop the registry (and dockerd if local.up started it); remove this checkout's mlbatch containers."""
    from mlbatch.local import infra
    from mlbatch.ui import say

    with errors():
        infra.down(settings(c, profile), say)


ns = Collection("local", up, status, down)
