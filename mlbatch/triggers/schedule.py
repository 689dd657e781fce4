"""`invoke schedule.export`: Cloud Scheduler -> Pub/Sub -> Cloud Function, as gcloud commands.

Cloud Scheduler publishes `{job, version, params}` to one topic on its cron; the function
(`mlbatch.triggers.function.pubsub_trigger`) starts a detached run keyed by the message
id, so Pub/Sub's at-least-once redelivery never starts a run twice. Nothing is created in
the cloud here: the function's source folder and env.yaml are written (mlbatch.triggers.deploy)
and the commands printed for a person (or a pipeline) to review and run.
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


def gcloud_commands(
    settings: Settings,
    job: Job,
    cron: str,
    version: str,
    params: Mapping[str, str],
    time_zone: str,
    source: Path,
    env_file: Path,
) -> list[list[str]]:
    """The argv of each gcloud call, in order: topic, function (from `source` with `env_file`,
    as mlbatch.triggers.deploy.write_source wrote them), scheduler job."""
    cron = check_cron(cron)
    if not _TIME_ZONE.match(time_zone):
        raise BadInput(f"invalid --time-zone {time_zone!r}: expected a tz database name, e.g. Etc/UTC or Europe/Amsterdam")
    body = message(job, version, params)
    if body["params"]:  # only what was given: the catalog's defaults apply at trigger time
        body["params"] = {k: v for k, v in body["params"].items() if k in params}
    project = ["--project", settings.project]
    return [
        ["gcloud", "pubsub", "topics", "create", TOPIC, *project],
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
            settings.service_account,
            "--timeout",
            "540s",
        ],  # fmt: skip
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


def script(commands: list[list[str]]) -> str:
    """The commands as shell lines, each argument quoted (values never parsed by the shell)."""
    return "\n".join(shlex.join(argv) for argv in commands) + "\n"
