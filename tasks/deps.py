"""`invoke deps.lock`: the hashed requirement locks of the image and the containers."""

from invoke import Collection

from tasks.common import ROOT, errors, task


@task(
    name="lock",
    help={
        "upgrade": "take the newest versions the sources allow; without it, keep the pins that still fit",
        "index_url": "the package index to resolve against (default https://pypi.org/simple)",
    },
)
def lock(c, upgrade=False, index_url="https://pypi.org/simple"):
    """Regenerate the hashed locks (pip-compile --generate-hashes): the agent's and each container's."""
    from mlbatch.release.locks import regenerate
    from mlbatch.ui import say

    with errors():
        done = regenerate(ROOT, say, index_url=index_url, upgrade=upgrade)
    say(f"wrote {', '.join(lock.output for lock in done)}; commit them with what changed their sources")


ns = Collection("deps", lock)
