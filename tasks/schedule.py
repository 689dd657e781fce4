"""`invoke schedule.export`: the gcloud commands for Cloud Scheduler -> Pub/Sub -> the mlbatch Cloud Function."""

from invoke import Collection, task

from tasks.common import errors, settings


@task(
    name="export",
    iterable=["param"],
    help={
        "job": "catalog job to schedule, e.g. train-digits",
        "cron": "unix-cron schedule in quotes, e.g. '0 3 * * *'",
        "version": "release each trigger runs (default latest: the newest that is not a pre-release, at trigger time)",
        "param": "job parameter as name=value; repeatable (validated against batch_code/jobs.yaml)",
        "time_zone": "tz database name the cron is read in (default Etc/UTC)",
        "profile": "settings profile whose project, region and service account the commands use (default gcp)",
    },
)
def export(c, job, cron, version="latest", param=None, time_zone="Etc/UTC", profile="gcp"):
    """Print the gcloud commands for Cloud Scheduler -> Pub/Sub -> the mlbatch Cloud Function."""
    from mlbatch.core.catalog import parse_params
    from mlbatch.triggers import schedule
    from mlbatch.triggers.common import load_catalog, pick_job

    with errors():
        s = settings(c, profile)
        chosen = pick_job(load_catalog(s), job)
        commands = schedule.gcloud_commands(s, chosen, cron, version, parse_params(param or ()), time_zone)
        print(schedule.script(commands), end="")


ns = Collection("schedule", export)
