"""The Cloud Function: Cloud Scheduler -> Pub/Sub -> here -> a detached run.

`invoke schedule.export` writes its source folder (main.py importing `pubsub_trigger` from
here, this package vendored beside it, requirements.txt) and env.yaml (the profile's
settings, one MLBATCH_SETTINGS_* variable each); see mlbatch.triggers.deploy. Deployed with
`gcloud functions deploy ... --source DIR/source --env-vars-file DIR/env.yaml --entry-point
pubsub_trigger`; run locally from that folder with Google's functions-framework:

    cd DIR/source && functions-framework --target pubsub_trigger --signature-type cloudevent --port 8080

Nothing is read at import: settings are read per message, inside the handler, so a bad
setting refuses (and acknowledges) the message instead of failing every cold start.
"""

from __future__ import annotations

import os
from pathlib import Path

import functions_framework

from mlbatch.triggers.deploy import settings_from_environment
from mlbatch.triggers.pubsub import handle

# The function's folder: main.py and the vendored package (parents: triggers, mlbatch, the folder).
SOURCE = Path(__file__).resolve().parents[2]


def _log(message: str) -> None:
    print(f"mlbatch-trigger: {message}", flush=True)  # Cloud Logging takes stdout lines


@functions_framework.cloud_event
def pubsub_trigger(cloud_event) -> None:
    handle(cloud_event.data, lambda: settings_from_environment(os.environ, SOURCE), _log)
