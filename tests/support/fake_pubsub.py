"""A fake Pub/Sub API (v1) on loopback, for the run-end notification: `projects.topics.publish`
only, every request checked against pubsub.v1.json from google-api-python-client.

What the service refuses beyond the document's types, from Google's reference and limits
pages (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/publish,
https://cloud.google.com/pubsub/quotas#resource_limits): a topic that does not exist (404
NOT_FOUND), a publisher without `pubsub.topics.publish` (403), a request without messages, a
message with neither data nor attributes, data that is not base64, more than 1000 messages or
10 MB, more than 100 attributes, attribute keys over 256 bytes or starting with `goog`, values
over 1024 bytes (400 INVALID_ARGUMENT). The answer is `{"messageIds": [...]}`, one per message.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
from typing import Any

from tests.support.fake_http import ApiError, RoutedApi, error_body, json_server

MAX_MESSAGES = 1000
MAX_REQUEST_BYTES = 10_000_000
MAX_ATTRIBUTES = 100


class _Faults:
    def __init__(self) -> None:
        self.http_burst: list[int] = []  # statuses answered to the next requests, in order
        self.forbidden = False  # the caller lacks pubsub.topics.publish


class FakePubSub(RoutedApi):
    API, NAME = "pubsub.v1", "pubsub"
    _ROUTES = [("POST", r"/v1/(?P<topic>projects/[^/]+/topics/[^/:]+):publish", "projects.topics", "publish")]

    def __init__(self, project: str, topics: tuple[str, ...] = ()):
        self.project = project
        self.topics = {f"projects/{project}/topics/{t}" for t in topics}
        self.published: dict[str, list[dict[str, Any]]] = {}  # topic -> messages (data decoded), in order
        self.requests: list[tuple[str, str, Any]] = []
        self.faults = _Faults()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server = json_server(self._dispatch, error_body(400, "Invalid JSON payload received."))
        self.endpoint = self._server.url

    def start(self) -> FakePubSub:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _admit(self, resource: str, name: str, args: dict[str, str]) -> None:
        if self.faults.forbidden:
            raise ApiError(403, f"User not authorized to perform this action. (resource={args['topic']})", "forbidden")
        if args["topic"] not in self.topics:
            raise ApiError(404, f"Resource not found (resource={args['topic'].rsplit('/', 1)[-1]}).", "notFound")

    def _topics_publish(self, params: dict[str, str], body: Any, topic: str) -> dict[str, Any]:
        messages = (body or {}).get("messages") or []
        if not messages:
            raise ApiError(400, "The request contains no messages.")
        if len(messages) > MAX_MESSAGES or len(json.dumps(body)) > MAX_REQUEST_BYTES:
            raise ApiError(400, "Request payload size exceeds the limit: 10000000 bytes.")
        decoded = []
        for i, message in enumerate(messages):
            attributes = message.get("attributes") or {}
            if not message.get("data") and not attributes:
                raise ApiError(400, f"Message {i} is empty: it must contain non-empty data or at least one attribute.")
            if len(attributes) > MAX_ATTRIBUTES:
                raise ApiError(400, f"Message {i} has more than {MAX_ATTRIBUTES} attributes.")
            for key, value in attributes.items():
                if key.startswith("goog") or len(key.encode()) > 256 or len(str(value).encode()) > 1024:
                    raise ApiError(400, f"Message {i}: invalid attribute {key[:40]!r}.")
            try:
                data = base64.b64decode(message.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"Invalid value at 'messages[{i}].data' (TYPE_BYTES): invalid base64") from None
            decoded.append({"data": data, "attributes": attributes})
        ids = [str(next(self._ids)) for _ in decoded]
        self.published.setdefault(topic, []).extend(decoded)
        return {"messageIds": ids}
