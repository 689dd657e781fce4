"""The Cloud Function: Cloud Scheduler -> Pub/Sub -> here -> a detached run.

Deployed with `gcloud functions deploy ... --entry-point pubsub_trigger` (see
`invoke schedule.export`); run locally with Google's functions-framework:

    functions-framework --source mlbatch/triggers/function.py --target pubsub_trigger \
        --signature-type cloudevent --port 8080

Settings come from the project's invoke.yaml and INVOKE_MLBATCH_* variables, as for invoke;
MLBATCH_PROJECT_ROOT names the project folder when it is not this file's checkout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import functions_framework

# functions-framework loads this file by path; make the checkout importable as a package.
_CHECKOUT = Path(__file__).resolve().parents[2]
if str(_CHECKOUT) not in sys.path:
    sys.path.insert(0, str(_CHECKOUT))

from mlbatch.triggers.pubsub import handle, settings_from_environment  # noqa: E402


def _log(message: str) -> None:
    print(f"mlbatch-trigger: {message}", flush=True)  # Cloud Logging takes stdout lines


@functions_framework.cloud_event
def pubsub_trigger(cloud_event) -> None:
    root = Path(os.environ.get("MLBATCH_PROJECT_ROOT") or _CHECKOUT)
    handle(cloud_event.data, settings_from_environment(root), _log)
