"""What the Pub/Sub function trusts, through its handler (mlbatch.triggers.pubsub.handle) with the
real controller against the in-memory provider and a file:// bucket: the message's age, its job,
its version under the deployment's policy, and its message id (no redelivery starts a second run,
whatever the first delivery got to). The same refusals through functions-framework and the
exported folder: tests/integration/test_function_deploy.py."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from mlbatch.core import runs
from mlbatch.triggers import pubsub
from tests.conftest import make_settings
from tests.support.memory_provider import hang
from tests.support.releases import publish_release

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
VERSION = "v1.0.0"  # the unit conftest's release
PRE_RELEASE = "v1.1.0-rc.1"


def event(message_id: str, body: dict, published: dt.datetime | None = NOW - dt.timedelta(seconds=5)) -> dict:
    """The data of a messagePublished CloudEvent, as Eventarc pushes it."""
    message = {"data": base64.b64encode(json.dumps(body).encode()).decode(), "messageId": message_id}
    if published is not None:
        message["publishTime"] = published.isoformat().replace("+00:00", "Z")
    return {"message": message, "subscription": "projects/mlbatch-test/subscriptions/eventarc-mlbatch-trigger"}


@pytest.fixture
def deployment(bucket, controller, lines):
    """handle() as the function calls it, with the deployment's settings; `deliver(event)`."""
    allowed = {"trigger_jobs": ["sleep"]}

    def deliver(data: dict, **settings):
        chosen = make_settings(bucket.uri, **{**allowed, **settings})
        return pubsub.handle(data, lambda: chosen, lines.append, now=lambda: NOW, controller=lambda s, say: controller)

    return deliver


def refused(lines: list[str]) -> str:
    (line,) = [line for line in lines if line.startswith("message not run (exit code 100)")]
    return line


def nothing_started(bucket, provider) -> bool:
    return not list(bucket.list("runs")) and not list(bucket.list("idempotency")) and provider.requests == []


# --- age ---------------------------------------------------------------------------------------


def test_a_fresh_message_of_an_allowed_job_starts_its_run(deployment, bucket, provider, lines):
    provider.script(hang())
    run_id = deployment(event("41", {"job": "sleep", "params": {"seconds": 2}}))
    spec = runs.read_spec(bucket, run_id)
    assert (spec.version, spec.params["seconds"], spec.idempotency_key) == (VERSION, 2, "pubsub-41")
    assert [r.name for r, _ in provider.requests] == [f"mlb-{run_id}-1"]
    assert f"message 41: run {run_id}" in lines


def test_a_stale_message_is_acknowledged_and_never_run(deployment, bucket, provider, lines):
    """--retry redelivers for days: after an outage, yesterday's 03:00 message must not fire now."""
    old = NOW - dt.timedelta(hours=2, minutes=3)
    assert deployment(event("42", {"job": "sleep"}, published=old)) is None
    assert "message 42 is stale: published 2026-11-30T09:57:00+00:00, 2h 03m 00s ago" in refused(lines)
    assert "more than trigger_max_age_seconds (3600)" in refused(lines)
    assert nothing_started(bucket, provider)


def test_the_maximum_age_is_the_deployments_setting(deployment, provider):
    provider.script(hang())
    ten_minutes = event("43", {"job": "sleep"}, published=NOW - dt.timedelta(minutes=10))
    assert deployment(ten_minutes, trigger_max_age_seconds=300) is None
    assert deployment(ten_minutes, trigger_max_age_seconds=900) is not None


@pytest.mark.parametrize(
    ("published", "message"),
    [
        (NOW + dt.timedelta(hours=1), "is 1h 00m 00s ahead of this clock: its age cannot be told"),
        (None, "publishTime None is not an RFC 3339 time with a zone"),
    ],
)
def test_a_message_whose_age_cannot_be_told_is_refused(deployment, bucket, provider, lines, published, message):
    assert deployment(event("44", {"job": "sleep"}, published=published)) is None
    assert message in refused(lines) and nothing_started(bucket, provider)


def test_a_publish_time_with_nanoseconds_as_pubsub_sends_it_is_read(deployment, provider):
    provider.script(hang())
    data = event("45", {"job": "sleep"})
    data["message"]["publishTime"] = "2026-11-30T11:59:58.123456789Z"
    assert deployment(data) is not None


# --- jobs ----------------------------------------------------------------------------------------


def test_a_job_the_deployment_does_not_allow_is_refused(deployment, bucket, provider, lines):
    """no-retries is in the release's catalog, but this deployment allows only sleep."""
    assert deployment(event("51", {"job": "no-retries"})) is None
    assert "message 51: job 'no-retries' is not allowed here; trigger_jobs: sleep" in refused(lines)
    assert nothing_started(bucket, provider)


def test_an_empty_allowlist_refuses_every_job(deployment, bucket, provider, lines):
    assert deployment(event("52", {"job": "sleep"}), trigger_jobs=[]) is None
    assert "trigger_jobs: none (trigger_jobs is empty)" in refused(lines) and nothing_started(bucket, provider)


def test_params_are_still_checked_against_the_catalog(deployment, bucket, provider, lines):
    assert deployment(event("53", {"job": "sleep", "params": {"seconds": "many"}})) is None
    assert "invalid param seconds='many'" in refused(lines)
    assert provider.requests == [] and not list(bucket.list("idempotency")), "refused before the key is claimed"


# --- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [None, "latest", VERSION])
def test_under_latest_a_message_runs_the_newest_release_that_is_not_a_pre_release(deployment, bucket, provider, asked):
    publish_release(bucket, "v0.9.0")
    publish_release(bucket, PRE_RELEASE)
    provider.script(hang())
    body = {"job": "sleep"} | ({"version": asked} if asked else {})
    run_id = deployment(event("61", body))
    assert runs.read_spec(bucket, run_id).version == VERSION


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        (PRE_RELEASE, f"pre-release {PRE_RELEASE} refused: this deployment runs the latest release"),
        ("v0.9.0", f"version v0.9.0 refused: the latest release is {VERSION}"),
        ("v1", "invalid version 'v1'"),
    ],
)
def test_under_latest_an_old_release_or_a_pre_release_is_refused(deployment, bucket, provider, lines, asked, message):
    publish_release(bucket, "v0.9.0")
    publish_release(bucket, PRE_RELEASE)
    assert deployment(event("62", {"job": "sleep", "version": asked})) is None
    assert message in refused(lines) and nothing_started(bucket, provider)


def test_a_pinned_deployment_runs_its_version_and_nothing_else(deployment, bucket, provider, lines):
    publish_release(bucket, PRE_RELEASE)
    provider.script(hang(), hang())
    pinned = {"trigger_version": PRE_RELEASE}
    for message_id, body in (("63", {"job": "sleep"}), ("64", {"job": "sleep", "version": PRE_RELEASE})):
        run_id = deployment(event(message_id, body), **pinned)
        assert runs.read_spec(bucket, run_id).version == PRE_RELEASE, "a pre-release runs where the deployment pins it"
    lines.clear()
    for asked in ("latest", VERSION):
        assert deployment(event("65", {"job": "sleep", "version": asked}), **pinned) is None
        assert f"version {asked!r} refused: this deployment runs only {PRE_RELEASE}" in refused(lines)
        lines.clear()
    assert len(provider.requests) == 2


# --- message ids: no redelivery starts a second run ------------------------------------------------


def test_a_redelivered_message_starts_nothing_new(deployment, bucket, provider, lines):
    provider.script(hang())
    first = deployment(event("71", {"job": "sleep"}))
    assert deployment(event("71", {"job": "sleep"})) == first
    assert runs.list_run_ids(bucket) == [first] and len(provider.requests) == 1
    assert f"idempotency key 'pubsub-71' already started run {first}" in lines


def test_a_run_that_could_not_start_is_acknowledged_and_its_redelivery_starts_nothing(deployment, bucket, provider, lines):
    """The run claimed the key and recorded its end (no capacity): raising would only make Pub/Sub
    redeliver a message that can find nothing but that run."""
    provider.no_capacity_in.update(provider.zones)
    assert deployment(event("72", {"job": "sleep"})) is None, "acknowledged, not raised"
    (run_id,) = runs.list_run_ids(bucket)
    assert runs.read_result(bucket, run_id).status == runs.NO_CAPACITY
    assert any(f"message 72: its run {run_id} ended no_capacity (exit code 106)" in line for line in lines)
    provider.no_capacity_in.clear()
    assert deployment(event("72", {"job": "sleep"})) == run_id
    assert runs.list_run_ids(bucket) == [run_id] and provider.requests == []


def died_after_writing_the_spec(deployment, bucket, provider) -> None:
    """The first delivery claims the key and writes spec.json, then the create call dies (a reset
    connection: nothing recorded, the function fails, Pub/Sub redelivers)."""
    provider.raise_from("create", ConnectionResetError("connection reset by peer"))
    with pytest.raises(ConnectionResetError):
        deployment(event("73", {"job": "sleep"}))


def died_after_claiming_the_key(deployment, bucket, provider) -> None:
    """The first delivery claims the key, then cannot write spec.json (the bucket fails the write:
    here a file where the job's runs/ folder must be)."""
    blocker = bucket.root / "runs" / "sleep"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        deployment(event("73", {"job": "sleep"}))
    blocker.unlink()


def claimed_run(bucket) -> str:
    (key,) = bucket.list("idempotency")
    return runs.read_record(bucket, key, runs.IdempotencyRecord).run_id


@pytest.mark.parametrize("first_delivery", [died_after_writing_the_spec, died_after_claiming_the_key])
def test_a_redelivery_after_the_first_died_having_claimed_starts_no_second_run(deployment, bucket, provider, first_delivery):
    first_delivery(deployment, bucket, provider)
    claimed = claimed_run(bucket)
    provider.script(hang())
    assert deployment(event("73", {"job": "sleep"})) == claimed, "the redelivery finds the claimed run"
    assert runs.list_run_ids(bucket) in ([claimed], []), "no second run"
    assert all(r.spec.run_id == claimed for r, _ in provider.requests), "no instance of another run"


@pytest.mark.parametrize("first_delivery", [died_after_writing_the_spec, died_after_claiming_the_key])
def test_a_redelivery_launches_the_run_a_dead_delivery_claimed_exactly_once(deployment, bucket, provider, first_delivery):
    first_delivery(deployment, bucket, provider)
    claimed = claimed_run(bucket)
    provider.script(hang())
    assert deployment(event("73", {"job": "sleep"})) == claimed
    assert [r.name for r, _ in provider.requests] == [f"mlb-{claimed}-1"], "the claimed run's first attempt, once"
    assert runs.list_run_ids(bucket) == [claimed] and runs.read_spec(bucket, claimed).idempotency_key == "pubsub-73"
