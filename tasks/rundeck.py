"""`invoke rundeck.export`: a Rundeck job definition per catalog job."""

from pathlib import Path

from invoke import Collection

from tasks.common import PROFILE_HELP, ROOT, errors, settings, task


@task(
    name="export",
    help={
        "output_dir": "folder for one <job>.yaml per catalog job (default .mlbatch/rundeck)",
        "project_dir": "absolute path of this checkout on the Rundeck node (default: this checkout)",
        "version": "take the catalog of this release (or latest); default: batch_code/jobs.yaml of the checkout",
        "invoke_path": "the invoke executable on the Rundeck node (default invoke)",
        "profile": PROFILE_HELP + "; its bucket holds the releases --version names",
    },
)
def export(c, output_dir=None, project_dir=None, version=None, invoke_path="invoke", profile=None):
    """Write a Rundeck job definition (YAML) per catalog job, calling run-batch with ${job.execid} as key."""
    from mlbatch.triggers import rundeck
    from mlbatch.triggers.common import load_catalog
    from mlbatch.ui import say

    with errors():
        s = settings(c, profile)
        out = Path(output_dir) if output_dir else s.state_dir / "rundeck"
        for path in rundeck.export(load_catalog(s, version), out, Path(project_dir or ROOT), invoke_path):
            say(f"wrote {path}")


ns = Collection("rundeck", export)
