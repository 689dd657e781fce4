"""A Pub/Sub message `{job, version, params}` -> a detached run, once per message id.

Pub/Sub delivers at least once: the message id is the run's idempotency key, so a
redelivered message finds the run it already started and starts nothing. A message that
can never succeed (not JSON, unknown job, bad param, a bad setting, a refused permission) is
acknowledged and logged rather than raised: redelivering it would fail the same way until
someone changes something, and Pub/Sub retries a failing push for days. Errors that may pass
(the bucket or Compute API unreachable) are raised, so Pub/Sub redelivers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from mlbatch.core.errors import BadInput, ExitCode, MlbatchError
from mlbatch.core.manifest import LATEST
from mlbatch.core.settings import Settings
from mlbatch.ui import Say

KEY_PREFIX = "pubsub-"
# Refusals a redelivery would meet again: acknowledge them, say why. A refused permission
# (111) needs a person to grant a role; retrying it only fills the log.
FINAL = (ExitCode.BAD_INPUT, ExitCode.NOT_FOUND, ExitCode.SKIPPED_OVERLAP, ExitCode.PERMISSION_DENIED)


@dataclasses.dataclass(frozen=True)
class Trigger:
    message_id: str
    job: str
    version: str
    params: tuple[str, ...]

    @property
    def idempotency_key(self) -> str:
        return KEY_PREFIX + self.message_id


def decode(event_data: Mapping[str, Any]) -> Trigger:
    """The CloudEvent data of google.cloud.pubsub.topic.v1.messagePublished -> a Trigger."""
    message = event_data.get("message") if isinstance(event_data, Mapping) else None
    if not isinstance(message, Mapping):
        raise BadInput("Pub/Sub event without a 'message': expected a messagePublished CloudEvent")
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    if not message_id:
        raise BadInput("Pub/Sub message without a messageId")
    try:
        body = json.loads(base64.b64decode(message.get("data") or "", validate=True))
    except (binascii.Error, ValueError):
        raise BadInput(f"message {message_id}: data is not base64 of JSON; expected {{job, version, params}}") from None
    if not isinstance(body, Mapping) or not isinstance(body.get("job"), str):
        raise BadInput(f"message {message_id}: expected a JSON object {{job, version, params}}, got {body!r}")
    params = body.get("params") or {}
    if not isinstance(params, Mapping):
        raise BadInput(f"message {message_id}: params must be an object of name -> value")
    pairs = tuple(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
    return Trigger(message_id, body["job"], str(body.get("version") or LATEST), pairs)


def start(trigger: Trigger, settings: Settings, say: Say) -> str:
    """Start (or find) the detached run of this message; its run id."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.run import detach
    from mlbatch.run.controller import Controller, RunRequest

    request = RunRequest(job=trigger.job, version=trigger.version, params=trigger.params, idempotency_key=trigger.idempotency_key)
    return detach.start(Controller(open_bucket(settings.bucket), get_provider(settings), say, say), request)


def handle(event_data: Mapping[str, Any], settings: Callable[[], Settings], say: Say) -> str | None:
    """The function's work: the run id started or found, None when the message is refused for good.

    `settings` is read here, per message: a bad setting is then a refusal of the message
    (logged, acknowledged) and not an import error, which the platform would retry for days."""
    try:
        trigger = decode(event_data)
        run_id = start(trigger, settings(), say)
    except MlbatchError as exc:
        if exc.exit_code in FINAL:
            say(f"message not run (exit code {int(exc.exit_code)}): {exc}")
            return None
        raise
    say(f"message {trigger.message_id}: run {run_id}")
    return run_id
