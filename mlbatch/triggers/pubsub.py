"""A Pub/Sub message `{job, version, params}` -> a detached run, once per message id.

Pub/Sub delivers at least once: the message id is the run's idempotency key, so a
redelivered message finds the run it already started and starts nothing. Before that, the
deployment's policy (mlbatch.triggers.policy) decides whether the message may run at all: its
age, its job, its version. A message that can never succeed (stale, not allowed, not JSON,
unknown job, bad param, a bad setting, a refused permission) is acknowledged and logged rather
than raised: redelivering it would fail the same way until someone changes something, and
Pub/Sub retries a failing push for days. So is a failure after the message's run recorded its
end (no capacity, quota): a redelivery would only find that run. Errors that may pass before
then (the bucket or Compute API unreachable) are raised, so Pub/Sub redelivers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mlbatch.core import manifest as manifests
from mlbatch.core import runs
from mlbatch.core.errors import BadInput, ExitCode, MlbatchError
from mlbatch.core.settings import Settings
from mlbatch.triggers import policy
from mlbatch.triggers.policy import Trigger
from mlbatch.ui import Say

if TYPE_CHECKING:
    from mlbatch.core.bucket import Bucket
    from mlbatch.run.controller import Controller

# Refusals a redelivery would meet again: acknowledge them, say why. A refused permission
# (111) needs a person to grant a role; retrying it only fills the log.
FINAL = (ExitCode.BAD_INPUT, ExitCode.NOT_FOUND, ExitCode.SKIPPED_OVERLAP, ExitCode.PERMISSION_DENIED)


def _publish_time(message: Mapping[str, Any], message_id: str) -> dt.datetime:
    """publishTime: RFC 3339, UTC ("2026-11-25T03:00:00.123456789Z"; Python 3.11 reads it)."""
    text = message.get("publishTime") or message.get("publish_time")
    try:
        published = dt.datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        published = None
    if published is None or published.tzinfo is None:
        raise BadInput(f"message {message_id}: publishTime {text!r} is not an RFC 3339 time with a zone: its age cannot be told")
    return published


def decode(event_data: Mapping[str, Any]) -> Trigger:
    """The CloudEvent data of google.cloud.pubsub.topic.v1.messagePublished -> a Trigger."""
    message = event_data.get("message") if isinstance(event_data, Mapping) else None
    if not isinstance(message, Mapping):
        raise BadInput("Pub/Sub event without a 'message': expected a messagePublished CloudEvent")
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    if not message_id:
        raise BadInput("Pub/Sub message without a messageId")
    published = _publish_time(message, message_id)
    try:
        body = json.loads(base64.b64decode(message.get("data") or "", validate=True))
    except (binascii.Error, ValueError):
        raise BadInput(f"message {message_id}: data is not base64 of JSON; expected {{job, version, params}}") from None
    if not isinstance(body, Mapping) or not isinstance(body.get("job"), str):
        raise BadInput(f"message {message_id}: expected a JSON object {{job, version, params}}, got {body!r}")
    version = body.get("version") or ""
    if not isinstance(version, str):
        raise BadInput(f"message {message_id}: version must be a string such as v1.4.0 or latest, got {version!r}")
    params = body.get("params") or {}
    if not isinstance(params, Mapping):
        raise BadInput(f"message {message_id}: params must be an object of name -> value")
    pairs = tuple(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
    return Trigger(message_id, body["job"], version, pairs, published)


def controller_for(settings: Settings, say: Say) -> Controller:
    """The run controller of the settings' bucket and provider (the function's only launch path)."""
    from mlbatch.core.bucket import open_bucket
    from mlbatch.providers import get_provider
    from mlbatch.run.controller import Controller

    return Controller(open_bucket(settings.bucket), get_provider(settings), say, say)


def _said_ended(bucket: Bucket, trigger: Trigger, exc: MlbatchError, say: Say) -> bool:
    """Whether the run this message's key claimed has recorded its end (said, then acknowledged:
    a redelivery could only find that run)."""
    key = runs.idempotency_record_key(trigger.job, trigger.idempotency_key)
    claimed = runs.read_record(bucket, key, runs.IdempotencyRecord)
    ended = runs.read_result(bucket, claimed.run_id) if claimed else None
    if ended is None:
        return False
    say(
        f"message {trigger.message_id}: its run {ended.run_id} ended {ended.status} (exit code {ended.run_exit_code}): "
        f"{exc}; acknowledged: a redelivery would only find that run"
    )
    return True


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def handle(
    event_data: Mapping[str, Any],
    settings: Callable[[], Settings],
    say: Say,
    *,
    now: Callable[[], dt.datetime] = _utcnow,
    controller: Callable[[Settings, Say], Controller] = controller_for,
) -> str | None:
    """The function's work: the run id started or found, None when the message is refused for good.

    `settings` is read here, per message: a bad setting is then a refusal of the message
    (logged, acknowledged) and not an import error, which the platform would retry for days.
    The policy is checked before any bucket or API is touched (age and job), and the version
    before anything is written."""
    from mlbatch.run import detach
    from mlbatch.run.controller import RunRequest

    trigger = launcher = None
    try:
        trigger = decode(event_data)
        chosen = settings()
        policy.check_age(trigger, chosen, now())
        policy.check_job(trigger, chosen)
        launcher = controller(chosen, say)
        bucket = launcher.bucket
        version = policy.version_to_run(trigger, chosen, lambda: manifests.resolve_version(bucket, manifests.LATEST))
        request = RunRequest(job=trigger.job, version=version, params=trigger.params, idempotency_key=trigger.idempotency_key)
        run_id = detach.start(launcher, request)
    except MlbatchError as exc:
        if exc.exit_code in FINAL:
            say(f"message not run (exit code {int(exc.exit_code)}): {exc}")
            return None
        if trigger is None or launcher is None or not _said_ended(launcher.bucket, trigger, exc, say):
            raise
        return None
    say(f"message {trigger.message_id}: run {run_id}")
    return run_id
