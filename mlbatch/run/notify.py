"""When a run or a sweep that a controller follows ends (`run-batch`, `runs.wait`), a JSON
summary goes to the profile's `notify_webhook` (an HTTP POST) and/or `notify_topic` (a
Pub/Sub message, with ADC). Nothing here can change the run's exit code: a notification
that fails is said on the terminal and dropped. The webhook URL is a secret (chat webhooks
carry their token in the path): it is in no message.

A detached run that nobody follows is not notified (the instance carries no secret to post
with, by design); `runs.wait` on it notifies when it ends.

Pub/Sub is one REST call (`projects.topics.publish`) through google-auth's AuthorizedSession,
as the run preflight's testIamPermissions calls are: google-cloud-pubsub would bring gRPC for
one publish.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from mlbatch import __version__
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import Bucket
from mlbatch.core.settings import Settings
from mlbatch.run.controller import RunOutcome
from mlbatch.ui import Say

PUBSUB = "https://pubsub.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/pubsub"
TIMEOUT = 10.0  # seconds a notification may take; it never holds up the exit longer
TRIES = 3  # a webhook or Pub/Sub answering 429/5xx, or not answering, is tried again (at once)


class NotifyFailed(Exception):
    """A notification that did not go through: said, never raised out of `notify`."""


def summary(bucket: Bucket, outcome: RunOutcome) -> dict[str, Any]:
    """What a notification says: the run (or sweep), how it ended, where its results are."""
    r = outcome.record
    data: dict[str, Any] = {
        "event": "mlbatch.sweep.ended" if r.tasks else "mlbatch.run.ended",
        "run_id": outcome.run_id,
        "job": r.job,
        "version": r.version,
        "status": r.status,
        "exit_code": outcome.exit_code,
        "message": r.message,
        "attempts": r.attempt,
        "finished": r.finished,
        "results": r.results,
        "mlbatch": __version__,
    }
    if r.tasks:
        record = runs.read_record(bucket, sweeps.sweep_key(outcome.run_id), sweeps.SweepRecord)
        data.update(tasks=r.tasks, succeeded=r.succeeded, sweep=r.sweep)
        if record is not None and record.ranking and record.metric:
            best = next(t for t in record.tasks if t.index == record.ranking[0])
            data["best"] = {"task": best.index, "params": best.params, record.metric: best.metrics.get(record.metric)}
    return data


def _post_webhook(url: str, body: bytes) -> None:
    # https, or http to loopback: the settings refuse any other URL (core.settings._http_url)
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})  # noqa: S310
    last = ""
    for _ in range(TRIES):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - https or loopback (settings)
                response.read()
                return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            last = type(getattr(exc, "reason", exc)).__name__  # never the URL: it is a secret
    raise NotifyFailed(f"the webhook answered {last}" if last.startswith("HTTP") else f"the webhook was not reached ({last})")


def _publish(settings: Settings, data: dict[str, Any]) -> str:
    from google.auth.transport.requests import AuthorizedSession

    if settings.pubsub_endpoint:  # the test profile's fake Pub/Sub (settings refuse it elsewhere)
        from google.auth.credentials import AnonymousCredentials

        session, endpoint = AuthorizedSession(AnonymousCredentials()), settings.pubsub_endpoint
    else:
        import google.auth

        credentials, _ = google.auth.default(scopes=[SCOPE])
        session, endpoint = AuthorizedSession(credentials), PUBSUB
    message = {
        "data": base64.b64encode(json.dumps(data, sort_keys=True).encode()).decode(),
        "attributes": {"event": data["event"], "run_id": data["run_id"], "job": data["job"], "status": data["status"]},
    }
    last = ""
    for _ in range(TRIES):
        try:
            response = session.post(
                f"{endpoint}/v1/{settings.notify_topic}:publish", json={"messages": [message]}, timeout=TIMEOUT
            )
        except OSError as exc:
            last = type(exc).__name__
            continue
        if response.status_code == 200:
            return str(response.json()["messageIds"][0])
        last = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code != 429 and response.status_code < 500:
            break
    raise NotifyFailed(f"Pub/Sub refused the message for {settings.notify_topic} ({last})")


def notify(settings: Settings, bucket: Bucket, outcome: RunOutcome, say: Say) -> list[str]:
    """Send the summary where the profile says; what went wrong, each said (never raised)."""
    problems: list[str] = []
    try:
        data = summary(bucket, outcome)
    except Exception as exc:  # noqa: BLE001 - a notification never fails the run
        say(f"notification not sent: its summary could not be read ({type(exc).__name__}: {exc})")
        return [str(exc)]
    if settings.notify_webhook:
        try:
            _post_webhook(settings.notify_webhook, json.dumps(data, sort_keys=True).encode())
            say("notified the webhook")
        except NotifyFailed as exc:
            problems.append(f"webhook: {exc}")
        except Exception as exc:  # noqa: BLE001 - never fails the run; the type only: a message could hold the URL
            problems.append(f"webhook: {type(exc).__name__}")
    if settings.notify_topic:
        try:
            say(f"notified {settings.notify_topic} (message {_publish(settings, data)})")
        except Exception as exc:  # noqa: BLE001 - a notification never fails the run
            problems.append(f"Pub/Sub: {exc}")
    for problem in problems:
        say(f"notification not sent ({problem}); the run's exit code is unchanged")
    return problems
