"""`invoke schedule.export`: Cloud Scheduler -> Pub/Sub -> Cloud Function, as gcloud commands.

Cloud Scheduler publishes `{job, version, params}` to one topic on its cron; the function
(`mlbatch.triggers.function.pubsub_trigger`) starts a detached run keyed by the message
id, so Pub/Sub's at-least-once redelivery never starts a run twice, and only what the
deployment's policy allows (mlbatch.triggers.policy: `trigger_*` settings, carried in
env.yaml). Nothing is created in the cloud here: the function's source folder, env.yaml and
the IAM policy files are written (mlbatch.triggers.deploy, mlbatch.triggers.access) and the
commands printed for a person (or a pipeline) to review and run: the topic and who may publish
to it, what the function's identity may do, the function (internal ingress, no
unauthenticated calls, its own identity and its trigger's), who may invoke it, the job.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput
from mlbatch.core.manifest import LATEST
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version
from mlbatch.triggers import access, deploy

TOPIC = "mlbatch-trigger"
FUNCTION = "mlbatch-trigger"
ENTRY_POINT = "pubsub_trigger"
RUNTIME = "python311"
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,-]+$")
_TIME_ZONE = re.compile(r"^[A-Za-z]+(?:[/_+-][A-Za-z0-9]+)*$")


def check_cron(cron: str) -> str:
    fields = cron.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise BadInput(
            f"invalid --cron {cron!r}: expected five unix-cron fields (minute hour day month weekday), e.g. '0 3 * * *'"
        )
    return " ".join(fields)


def message(job: Job, version: str, params: Mapping[str, str]) -> dict:
    """The Pub/Sub message body the function takes; params typed and checked against the catalog."""
    if version != LATEST:
        parse_version(version)
    return {"job": job.name, "version": version, "params": job.resolve_params(params) if params else {}}


def check_deployment(settings: Settings, job: Job, version: str) -> None:
    """Refuse an export whose function would refuse its own schedule, or that names no identities."""
    where = f"mlbatch.profiles.{settings.profile}"
    if job.name not in settings.trigger_jobs:
        allowed = ", ".join(settings.trigger_jobs) or "none"
        raise BadInput(
            f"job {job.name!r} is not in {where}.trigger_jobs ({allowed}): the function would refuse every "
            "message of this schedule; add it there"
        )
    if version != settings.trigger_version:
        raise BadInput(
            f"--version {version} differs from {where}.trigger_version ({settings.trigger_version}): the function "
            "would refuse every message of this schedule; leave --version out, or change trigger_version"
        )
    access.require_identities(settings)


def gcloud_commands(
    settings: Settings,
    job: Job,
    cron: str,
    version: str,
    params: Mapping[str, str],
    time_zone: str,
    out_dir: Path,
) -> list[list[str]]:
    """The argv of each gcloud call, in order: topic and its publishers, the function's grants,
    the function (from what `export` writes under `out_dir`), its invoker, the scheduler job."""
    cron = check_cron(cron)
    if not _TIME_ZONE.match(time_zone):
        raise BadInput(f"invalid --time-zone {time_zone!r}: expected a tz database name, e.g. Etc/UTC or Europe/Amsterdam")
    body = message(job, version, params)
    check_deployment(settings, job, version)
    if body["params"]:  # only what was given: the catalog's defaults apply at trigger time
        body["params"] = {k: v for k, v in body["params"].items() if k in params}
    project = ["--project", settings.project]
    source, env_file = deploy.paths(out_dir)
    # The deploy's flags: https://cloud.google.com/sdk/gcloud/reference/functions/deploy. Internal
    # ingress still admits Eventarc and Pub/Sub of the same project
    # (https://cloud.google.com/run/docs/securing/ingress); --no-allow-unauthenticated keeps
    # allUsers off the invoker role, and the trigger's identity signs each push.
    return [
        ["gcloud", "pubsub", "topics", "create", TOPIC, *project],
        *access.grant_commands(settings, TOPIC, access.policy_files(out_dir)),
        [
            "gcloud",
            "functions",
            "deploy",
            FUNCTION,
            "--gen2",
            *project,
            "--region",
            settings.region,
            "--runtime",
            RUNTIME,
            "--source",
            str(source),
            "--entry-point",
            ENTRY_POINT,
            "--env-vars-file",
            str(env_file),
            "--trigger-topic",
            TOPIC,
            "--retry",
            "--service-account",
            settings.trigger_service_account,
            "--trigger-service-account",
            settings.trigger_invoker_service_account,
            "--ingress-settings",
            "internal-only",
            "--no-allow-unauthenticated",
            "--timeout",
            "540s",
        ],  # fmt: skip
        access.invoker_command(settings, FUNCTION),
        [
            "gcloud",
            "scheduler",
            "jobs",
            "create",
            "pubsub",
            f"mlbatch-{job.name}",
            *project,
            "--location",
            settings.region,
            "--schedule",
            cron,
            "--time-zone",
            time_zone,
            "--topic",
            TOPIC,
            "--message-body",
            json.dumps(body, sort_keys=True),
            "--description",
            f"mlbatch: run {job.name} ({version}) at {cron} {time_zone}",
        ],  # fmt: skip
    ]


def export(
    settings: Settings,
    job: Job,
    cron: str,
    version: str | None,
    params: Mapping[str, str],
    time_zone: str,
    out_dir: Path,
) -> list[list[str]]:
    """`invoke schedule.export`: every check first, then the function's folder, env.yaml and the
    IAM policy files under `out_dir`; the commands to run. `version` defaults to the
    deployment's trigger_version."""
    commands = gcloud_commands(settings, job, cron, version or settings.trigger_version, params, time_zone, out_dir)
    deploy.write_source(settings, out_dir)  # after the checks: bad input refused before anything is written
    access.write_files(settings, out_dir)
    return commands


def script(commands: list[list[str]]) -> str:
    """The commands as shell lines, each argument quoted (values never parsed by the shell)."""
    return "\n".join(shlex.join(argv) for argv in commands) + "\n"
