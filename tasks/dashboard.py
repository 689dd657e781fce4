"""`invoke dashboard`: the bucket's records as a read-only web view, served on 127.0.0.1 or exported."""

from pathlib import Path

from tasks.common import PROFILE_HELP, errors, settings, task


@task(
    help={
        "port": "serve on 127.0.0.1 at this port (default 8050; 0: any free port)",
        "export": "write the pages into this folder instead of serving them (open DIR/index.html)",
        "limit": "how many of the newest runs the run list shows (default 200)",
        "profile": PROFILE_HELP,
    },
)
def dashboard(c, port: int = 8050, export=None, limit: int = 200, profile=None):
    """A read-only web view of the bucket: runs (status, phases, cost), logs, sweeps with plots, a job across releases."""
    from mlbatch.ui import say

    with errors():
        from mlbatch.dashboard import server  # InfraError, said plainly, without the dashboard extra

        site = server.site_for(settings(c, profile), limit)
        if export:
            server.export(site, Path(export), say)
        else:
            server.serve(site, port, say)
