"""What a Pub/Sub function deployment trusts: which jobs, which release, how old a message.

Anyone who can publish to the topic (a named publisher, or whoever may create Cloud Scheduler
jobs in the project: Scheduler publishes through its service agent) chooses the message body.
The function therefore runs only what its deployment allows, set at export time in its
env.yaml (mlbatch.core.settings, `trigger_*`):

- `trigger_jobs`: the jobs a message may start; anything else, and everything when the list
  is empty, is refused.
- `trigger_version`: `latest` runs the newest release that is not a pre-release, resolved when
  the message arrives; a message naming a version is run only when it names that one (an old
  release or a pre-release is refused). A pinned version (`v1.4.0`, or a pre-release such as
  `v1.5.0-rc.1`: the only way one is ever run) runs that version and nothing else.
- `trigger_max_age_seconds`: `--retry` makes Pub/Sub redeliver a failing message for as long
  as it keeps it (7 days by default), so after an outage a backlog would fire at once. A
  message older than this (by the `publishTime` Pub/Sub stamps on it) is stale: acknowledged
  and logged, never run.

Every refusal is a BadInput (100): the handler acknowledges it and logs the reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from mlbatch.core.errors import BadInput
from mlbatch.core.manifest import LATEST
from mlbatch.core.settings import Settings
from mlbatch.core.versions import parse_version

# A message's run is claimed under its message id (mlbatch.run.claims): a redelivery finds it.
KEY_PREFIX = "pubsub-"


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A decoded Pub/Sub message (mlbatch.triggers.pubsub.decode): what the policy below judges."""

    message_id: str
    job: str
    version: str  # as the message gives it: "" when it names none
    params: tuple[str, ...]
    published: dt.datetime  # the message's publishTime, stamped by Pub/Sub

    @property
    def idempotency_key(self) -> str:
        return KEY_PREFIX + self.message_id


# How far a publishTime may lie ahead of this clock (skew between Pub/Sub's and ours) before
# the message is refused as one whose age cannot be trusted.
CLOCK_SKEW = dt.timedelta(minutes=5)


def _age(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def check_age(trigger: Trigger, settings: Settings, now: dt.datetime) -> None:
    """Refuse a stale message (older than trigger_max_age_seconds) or one published in the future."""
    age = (now - trigger.published).total_seconds()
    if age > settings.trigger_max_age_seconds:
        raise BadInput(
            f"message {trigger.message_id} is stale: published {trigger.published.isoformat()}, {_age(age)} ago, "
            f"more than trigger_max_age_seconds ({settings.trigger_max_age_seconds}); acknowledged, never run"
        )
    if -age > CLOCK_SKEW.total_seconds():
        raise BadInput(
            f"message {trigger.message_id}: publishTime {trigger.published.isoformat()} is {_age(-age)} ahead of "
            "this clock: its age cannot be told; acknowledged, not run"
        )


def check_job(trigger: Trigger, settings: Settings) -> None:
    """Refuse a job this deployment does not allow."""
    if trigger.job not in settings.trigger_jobs:
        allowed = ", ".join(settings.trigger_jobs) or "none (trigger_jobs is empty)"
        raise BadInput(f"message {trigger.message_id}: job {trigger.job!r} is not allowed here; trigger_jobs: {allowed}")


def version_to_run(trigger: Trigger, settings: Settings, latest: Callable[[], str]) -> str:
    """The version the message runs under the deployment's policy (`latest` left for the run to
    resolve); `latest()` gives the newest release that is not a pre-release, asked only when the
    message names a version under the `latest` policy."""
    asked, policy = trigger.version, settings.trigger_version
    if policy != LATEST:  # pinned: that version, or nothing
        if asked not in ("", policy):
            raise BadInput(
                f"message {trigger.message_id}: version {asked!r} refused: this deployment runs only {policy} "
                "(trigger_version); leave version out of the message, or name that one"
            )
        return policy
    if asked in ("", LATEST):
        return LATEST
    if parse_version(asked).pre:
        raise BadInput(
            f"message {trigger.message_id}: pre-release {asked} refused: this deployment runs the latest release "
            "(trigger_version: latest); a pre-release runs only where trigger_version pins it"
        )
    newest = latest()
    if asked != newest:
        raise BadInput(
            f"message {trigger.message_id}: version {asked} refused: the latest release is {newest} and this "
            "deployment runs only the latest (trigger_version: latest)"
        )
    return asked
