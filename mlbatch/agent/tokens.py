"""A job's own credentials: the VM's token, downscoped to what the job declares, served to the
job container alone as a metadata server would (docs/architecture.md, "Jobs and the VM's
credentials").

The VM's token is the runner's. The agent trades it at the Security Token Service for a token
carrying a Credential Access Boundary (mlbatch.core.access.access_boundary: reads under the
job's `google_access.read` and `.write` prefixes, writes under `.write`), as
google.auth.downscoped does (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials),
and serves that token on a port of its own, in the metadata server's form: on a VM on the
jobs network's gateway, on a local instance (whose jobs share the host's network) on the host's
loopback. The job's google-auth (GCE_METADATA_HOST and GCE_METADATA_IP point there) finds it
as Application Default Credentials. The server answers only the job container's address (on
a local instance the host's loopback, which every process of the host shares), only requests
with `Metadata-Flavor: Google` and without `X-Forwarded-For` (as the metadata server does,
against request forgery through a proxy), and only these paths; anything else gets 403 or 404.
The token is traded again when less than 5 minutes of it are left.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

STS_URL = "https://sts.googleapis.com/v1/token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
REFRESH_BEFORE = 300  # seconds of a token's life left when it is traded again
PEER_WAIT = 60  # seconds a request waits for the agent to learn the job container's address
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
STOP_POLL = 0.05  # seconds between the server's looks for a stop (socketserver's poll_interval)


class JobToken:
    """The VM's token downscoped to `boundary`, traded again before it expires."""

    def __init__(self, boundary: Mapping[str, Any], sts_url: str):
        from mlbatch.agent.gce import token_destination

        self.boundary = dict(boundary)
        self.sts_url = token_destination(sts_url)  # the VM's token goes to Google or loopback only
        self._token, self._expires = "", 0.0
        self._lock = threading.Lock()

    def _trade(self) -> tuple[str, float]:
        from google.auth.transport.requests import Request
        from google.oauth2 import sts

        from mlbatch.agent import gce

        source = json.loads(gce.metadata("instance/service-accounts/default/token", retry_for=30.0))
        answer = sts.Client(self.sts_url).exchange_token(
            request=Request(),
            grant_type=TOKEN_EXCHANGE,
            subject_token=source["access_token"],
            subject_token_type=ACCESS_TOKEN,
            requested_token_type=ACCESS_TOKEN,
            additional_options=self.boundary,
        )
        # STS may leave expires_in out of a downscoped token: it lives as long as its source.
        lifetime = int(answer.get("expires_in") or source["expires_in"])
        return answer["access_token"], time.monotonic() + lifetime

    def get(self) -> tuple[str, int]:
        """(token, seconds left)."""
        with self._lock:
            if self._expires - time.monotonic() < REFRESH_BEFORE:
                self._token, self._expires = self._trade()
            return self._token, int(self._expires - time.monotonic())


class TokenServer:
    """The metadata server's token paths, for one job container, on `host` (the jobs network's
    gateway on a VM, the loopback on a local instance)."""

    def __init__(self, token: JobToken, host: str, email: str, project: str):
        self.token, self.email, self.project = token, email, project
        self._peer = ""
        self._peer_known = threading.Event()
        self.refused: list[str] = []
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self.address = f"{host}:{self._server.server_address[1]}"

    def allow(self, peer: str) -> None:
        """The job container's address on the jobs network: the only client answered."""
        self._peer = peer
        self._peer_known.set()

    def environment(self) -> dict[str, str]:
        """What points the job's google-auth here (GCE_METADATA_IP: its "am I on GCE" ping)."""
        return {"GCE_METADATA_HOST": self.address, "GCE_METADATA_IP": self.address}

    def _answer(self, path: str, query: str) -> tuple[int, str, str]:
        if path in ("", "/"):
            return 200, "text/plain", "computeMetadata/\n"
        prefix = "/computeMetadata/v1/"
        if not path.startswith(prefix):
            return 404, "text/plain", "not found"
        path = path[len(prefix) :]
        account = "instance/service-accounts/default/"
        if path == account + "token":
            token, left = self.token.get()
            return 200, "application/json", json.dumps({"access_token": token, "expires_in": left, "token_type": "Bearer"})
        if path == account + "email":
            return 200, "text/plain", self.email
        if path == account and "recursive=true" in query:
            return 200, "application/json", json.dumps({"aliases": ["default"], "email": self.email, "scopes": [SCOPE]})
        if path == "project/project-id":
            return 200, "text/plain", self.project
        return 404, "text/plain", "not found"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        """One GET: the token's paths for the job's container, a refusal for anyone else."""
        self._peer_known.wait(PEER_WAIT)
        status, content_type, text = 403, "text/plain", "not the job's container"
        if request.client_address[0] != self._peer:
            self.refused.append(f"{request.client_address[0]} {request.path}")
        elif request.headers.get("Metadata-Flavor") != "Google" or request.headers.get("X-Forwarded-For"):
            text = "Missing Metadata-Flavor:Google header, or X-Forwarded-For present"
        else:
            try:
                status, content_type, text = self._answer(*request.path.partition("?")[::2])
            except Exception as exc:  # the trade failed: the job sees an error, the log says why
                self.refused.append(f"token: {type(exc).__name__}: {exc}")
                status, text = 503, "the job's token could not be made"
        body = text.encode()
        request.send_response(status)
        for name, value in (("Metadata-Flavor", "Google"), ("Content-Type", content_type), ("Content-Length", len(body))):
            request.send_header(name, str(value))
        request.end_headers()
        request.wfile.write(body)

    def __enter__(self) -> TokenServer:
        # Its stop is the job's end: shutdown() is answered within STOP_POLL, not socketserver's 0.5 s.
        serve = {"poll_interval": STOP_POLL}
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs=serve, name="job-token", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._peer_known.set()  # release any request still waiting for the job's address
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.server.owner.handle(self)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenServer
