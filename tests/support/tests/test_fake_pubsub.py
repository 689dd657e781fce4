"""The fake Pub/Sub API refuses what the real `projects.topics.publish` refuses (pubsub.v1
discovery document, and the service's own rules: see the fake's docstring)."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.support.fake_pubsub import FakePubSub

TOPIC = "projects/mlbatch-test/topics/runs"


@pytest.fixture
def fake():
    fake = FakePubSub("mlbatch-test", topics=("runs",)).start()
    yield fake
    fake.stop()


def publish(fake: FakePubSub, body, topic: str = TOPIC) -> requests.Response:
    return requests.post(f"{fake.endpoint}/v1/{topic}:publish", json=body, timeout=10)


def test_a_message_is_published_with_an_id(fake):
    data = base64.b64encode(b'{"run": 1}').decode()
    answer = publish(fake, {"messages": [{"data": data, "attributes": {"run_id": "r"}}]})
    assert answer.status_code == 200 and answer.json() == {"messageIds": ["1"]}
    assert fake.published[TOPIC] == [{"data": b'{"run": 1}', "attributes": {"run_id": "r"}}]


@pytest.mark.parametrize(
    ("body", "topic", "status", "message"),
    [
        ({"messages": [{"data": "eA=="}]}, "projects/mlbatch-test/topics/nope", 404, "Resource not found"),
        ({"messages": []}, TOPIC, 400, "contains no messages"),
        ({"messages": [{}]}, TOPIC, 400, "non-empty data or at least one attribute"),
        ({"messages": [{"data": "not base64!"}]}, TOPIC, 400, "invalid base64"),
        ({"messages": [{"data": "eA==", "colour": "red"}]}, TOPIC, 400, 'Unknown name "colour"'),
        ({"messages": [{"attributes": {"googthing": "x"}}]}, TOPIC, 400, "invalid attribute"),
    ],
)
def test_what_the_service_refuses(fake, body, topic, status, message):
    answer = publish(fake, body, topic)
    assert answer.status_code == status and message in answer.json()["error"]["message"], answer.text
    assert fake.published == {}


def test_a_publisher_without_the_permission_is_refused(fake):
    fake.faults.forbidden = True
    assert publish(fake, {"messages": [{"data": "eA=="}]}).status_code == 403
