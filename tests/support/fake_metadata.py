"""A loopback metadata server for a VM's service account: what google-auth and the agent ask
of the real one (https://cloud.google.com/compute/docs/metadata/querying-metadata and
.../authenticating-workloads): `/` answers with the `Metadata-Flavor: Google` header (the
"am I on GCE" ping), and under /computeMetadata/v1/ the account's token (JSON access_token,
expires_in, token_type), its email, its recursive info, and the project id. As the real
server: a request without `Metadata-Flavor: Google`, or with `X-Forwarded-For`, gets 403; an
unknown path 404. The token it issues is registered with the bucket's IAM model
(tests/support/gcs_iam.py) as the account's. Every request's client address is kept, so a
test can tell who reached it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
from collections.abc import Iterator

from tests.support.gcs_iam import BucketIam
from tests.support.loopback import send_metadata, serving

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class FakeMetadata:
    def __init__(self, email: str, project: str, iam: BucketIam | None = None):
        self.email, self.project = email, project
        self.token = "ya29.vm-" + secrets.token_urlsafe(16)
        if iam is not None:
            iam.add_token(self.token, email)
        self.requests: list[tuple[str, str]] = []  # (client address, path)
        self.tokens_given = 0
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, path: str, query: str) -> tuple[int, str, str]:
        if path in ("", "/"):
            return 200, "text/plain", "computeMetadata/\n"
        values = {
            "instance/service-accounts/default/email": self.email,
            "project/project-id": self.project,
        }
        path = path.removeprefix("/computeMetadata/v1/")
        if path in values:
            return 200, "text/plain", values[path]
        if path == "instance/service-accounts/default/token":
            self.tokens_given += 1
            return 200, "application/json", json.dumps({"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"})
        if path == "instance/service-accounts/default/" and "recursive=true" in query:
            return 200, "application/json", json.dumps({"aliases": ["default"], "email": self.email, "scopes": [SCOPE]})
        return 404, "text/plain", "not found"

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                pass

            def do_GET(self):  # noqa: N802 - the stdlib's name
                fake.requests.append((self.client_address[0], self.path))
                if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
                    return self._reply(403, "text/plain", "Missing Metadata-Flavor:Google header.")
                path, _, query = self.path.partition("?")
                self._reply(*fake._answer(path, query))

            def _reply(self, status: int, content_type: str, text: str) -> None:
                send_metadata(self, status, text, content_type)

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeMetadata]:
        with serving(self._server, "fake-metadata"):
            yield self
