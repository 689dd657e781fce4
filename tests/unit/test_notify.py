"""Run-end notifications (mlbatch.run.notify): the summary, published to the fake Pub/Sub API on
the test profile, posted to a webhook on 127.0.0.1; a notification that fails is said and
dropped, never raised, and never shows the webhook URL. `invoke run-batch` posting it is in
tests/integration/test_cli_commands.py."""

from __future__ import annotations

import json

import pytest

from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.core.settings import load_settings
from mlbatch.run.controller import RunOutcome
from mlbatch.run.notify import notify
from tests.conftest import ROOT, repo_config
from tests.support.fake_pubsub import FakePubSub
from tests.support.loopback import JsonServer

TOPIC = "projects/mlbatch-test/topics/mlbatch-runs"


@pytest.fixture
def pubsub():
    fake = FakePubSub("mlbatch-test", topics=("mlbatch-runs",)).start()
    yield fake
    fake.stop()


def settings(**profile):
    config = repo_config()
    config["profile"] = "test"
    config["profiles"]["test"].update(bucket="gs://mlbatch-test-bucket", **profile)
    return load_settings(config, ROOT, env={})


def outcome(status: str = runs.FAILED, code: int = 3) -> RunOutcome:
    record = runs.ResultRecord(
        run_id="sleep-20261125-120000-abcd", job="sleep", version="v1.0.0", attempt=1, status=status, exit_code=code,
        message="", finished="2026-11-25T12:00:09+00:00", results="gs://mlbatch-test-bucket/runs/sleep/x/results",
    )  # fmt: skip
    return RunOutcome(record.run_id, record.run_exit_code, record, {})


def test_the_summary_is_published_to_the_topic(pubsub, tmp_path):
    said: list[str] = []
    s = settings(notify_topic=TOPIC, pubsub_endpoint=pubsub.endpoint)
    assert notify(s, FileBucket(tmp_path), outcome(), said.append) == []
    (message,) = pubsub.published[TOPIC]
    data = json.loads(message["data"])
    assert (data["event"], data["run_id"], data["status"], data["exit_code"]) == (
        "mlbatch.run.ended", "sleep-20261125-120000-abcd", "failed", 3
    )  # fmt: skip
    assert message["attributes"] == {"event": "mlbatch.run.ended", "run_id": data["run_id"], "job": "sleep", "status": "failed"}
    assert said == [f"notified {TOPIC} (message 1)"]


def test_a_refused_publish_is_said_and_dropped(pubsub, tmp_path):
    said: list[str] = []
    s = settings(notify_topic="projects/mlbatch-test/topics/gone", pubsub_endpoint=pubsub.endpoint)
    problems = notify(s, FileBucket(tmp_path), outcome(), said.append)
    assert len(problems) == 1 and "Pub/Sub refused the message for projects/mlbatch-test/topics/gone (HTTP 404" in problems[0]
    assert said[-1].endswith("the run's exit code is unchanged")


def test_a_webhook_that_fails_is_tried_three_times_and_its_url_never_shown(tmp_path):
    posts: list[bytes] = []

    def respond(verb, path, headers, body):
        posts.append(body)
        return 503, {}

    server = JsonServer(respond)
    server.start()
    url = f"{server.url}/hooks/T0-very-secret"
    try:
        said: list[str] = []
        problems = notify(settings(notify_webhook=url), FileBucket(tmp_path), outcome(), said.append)
    finally:
        server.stop()
    assert len(posts) == 3 and json.loads(posts[0])["run_id"] == "sleep-20261125-120000-abcd"
    assert problems == ["webhook: the webhook answered HTTP 503"]
    assert not any("very-secret" in line for line in said)
