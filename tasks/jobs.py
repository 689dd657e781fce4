"""`invoke jobs[.new|.schema]`: the job catalog, a new job's skeleton, and the catalog's JSON Schema."""

from invoke import Collection

from mlbatch.core.options import Format
from tasks.common import FORMAT_HELP, PROFILE_HELP, ROOT, errors, settings, task


@task(
    name="list",
    default=True,
    help={
        "version": "the catalog of this release (or latest); default: batch_code/jobs.yaml of the checkout",
        "format": FORMAT_HELP,
        "profile": PROFILE_HELP,
    },
)
def list_jobs(c, version=None, format: Format = "table", profile=None):
    """List the jobs of a release's catalog (or the checkout's): container, machine, timeout, params."""
    from mlbatch.release.jobs import job_rows, render_jobs
    from mlbatch.triggers.common import load_catalog
    from mlbatch.ui import emit

    with errors():
        rows = job_rows(load_catalog(settings(c, profile), version))
    emit(format, rows, render_jobs)


@task(name="new", help={"name": "the new job's name: lowercase letters, digits and dashes, e.g. score-users"})
def new(c, name):
    """Start a job: batch_code/NAME.py (a skeleton that writes a metric), its entry in jobs.yaml and its test."""
    from mlbatch.release.jobs import new_job
    from mlbatch.ui import say

    with errors():
        new_job(ROOT, name, say)
    say(f"next: edit them, `invoke test -- tests/jobs`, then `invoke release` and `invoke run-batch --job {name}`")


@task(name="schema")
def schema(c):
    """Write batch_code/jobs.schema.json, the JSON Schema of jobs.yaml, from the catalog's model."""
    from mlbatch.release.jobs import write_schema
    from mlbatch.ui import say

    say(f"wrote {write_schema(ROOT).relative_to(ROOT)}")


ns = Collection("jobs", list_jobs, new, schema)
