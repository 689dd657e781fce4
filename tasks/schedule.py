"""`invoke schedule.export`: the gcloud commands for Cloud Scheduler -> Pub/Sub -> the mlbatch Cloud Function."""

from invoke import Collection

from tasks.common import errors, settings, task


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
        "output_dir": "folder for the function's source/ and env.yaml (default .mlbatch/function)",
    },
)
def export(c, job, cron, version="latest", param=None, time_zone="Etc/UTC", profile="gcp", output_dir=None):
    """Write the Cloud Function's source and env.yaml; print the gcloud commands for Scheduler -> Pub/Sub -> it."""
    from pathlib import Path

    from mlbatch.core.catalog import parse_params
    from mlbatch.triggers import deploy, schedule
    from mlbatch.triggers.common import load_catalog, pick_job

    with errors():
        s = settings(c, profile)
        chosen = pick_job(load_catalog(s), job)
        out = Path(output_dir).resolve() if output_dir else s.state_dir / "function"
        params = parse_params(param or ())
        commands = schedule.gcloud_commands(s, chosen, cron, version, params, time_zone, *deploy.paths(out))
        deploy.write_source(s, out)  # after the commands: bad input refused before anything is written
        print(schedule.script(commands), end="")


ns = Collection("schedule", export)
