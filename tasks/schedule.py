"""`invoke schedule.export`: the gcloud commands for Cloud Scheduler -> Pub/Sub -> the mlbatch Cloud Function."""

from invoke import Collection

from tasks.common import errors, settings, task


@task(
    name="export",
    iterable=["param"],
    help={
        "job": "catalog job to schedule, e.g. train-digits",
        "cron": "unix-cron schedule in quotes, e.g. '0 3 * * *'",
        "version": "release each trigger runs: the profile's trigger_version (the default), latest or a pinned vX.Y.Z",
        "param": "job parameter as name=value; repeatable (validated against batch_code/jobs.yaml)",
        "time_zone": "tz database name the cron is read in (default Etc/UTC)",
        "profile": "settings profile whose project, region, identities and trigger_* policy the commands use (default gcp)",
        "output_dir": "folder for the function's source/, env.yaml and iam/ policy files (default .mlbatch/function)",
    },
)
def export(c, job, cron, version=None, param=None, time_zone="Etc/UTC", profile="gcp", output_dir=None):
    """Write the Cloud Function's source, env.yaml and IAM files; print the gcloud commands for Scheduler -> Pub/Sub -> it."""
    from pathlib import Path

    from mlbatch.core.catalog import parse_params
    from mlbatch.triggers import schedule
    from mlbatch.triggers.common import load_catalog, pick_job

    with errors():
        s = settings(c, profile)
        chosen = pick_job(load_catalog(s), job)
        out = Path(output_dir).resolve() if output_dir else s.state_dir / "function"
        commands = schedule.export(s, chosen, cron, version, parse_params(param or ()), time_zone, out)
        print(schedule.script(commands), end="")


ns = Collection("schedule", export)
