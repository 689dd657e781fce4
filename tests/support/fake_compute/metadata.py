"""The per-instance metadata server the agent reads (GCE_METADATA_HOST points at it)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any

from tests.support.loopback import send_metadata


def metadata_server(fake: Any, instance: Any) -> http.server.ThreadingHTTPServer:
    """The instance's metadata server: attributes, name, zone, project, a token."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._reply(403, "Missing Metadata-Flavor:Google header", "text/plain")
            with fake._lock:
                unavailable = fake.faults.metadata_unavailable > 0
                fake.faults.metadata_unavailable -= 1 if unavailable else 0
            if unavailable:  # early in boot the metadata server may not answer yet
                return self._reply(503, "Service Unavailable", "text/plain")
            path = urllib.parse.urlsplit(self.path).path.removeprefix("/computeMetadata/v1/")
            attrs = instance.metadata()
            if fake.faults.corrupt_run_spec and "mlbatch-run-spec" in attrs:
                attrs["mlbatch-run-spec"] = attrs["mlbatch-run-spec"][: len(attrs["mlbatch-run-spec"]) // 2]
            if path.startswith("instance/attributes/") and path.split("/", 2)[2] in attrs:
                return self._reply(200, attrs[path.split("/", 2)[2]], "text/plain")
            values = {
                "instance/name": instance.name,
                "instance/zone": f"projects/123456/zones/{instance.zone}",
                "project/project-id": fake.project,
                "instance/id": instance.body["id"],
                # TRUE once a preemption began (a max run duration or a delete leaves it FALSE).
                "instance/preempted": "TRUE" if instance.preempted else "FALSE",
            }
            if path in values:
                return self._reply(200, values[path], "text/plain")
            if path.startswith("instance/service-accounts/default/token"):
                token = {"access_token": "fake-token", "expires_in": 3600, "token_type": "Bearer"}
                return self._reply(200, json.dumps(token), "application/json")
            if path.startswith("instance/service-accounts/default/email"):
                return self._reply(200, instance.body.get("serviceAccounts", [{}])[0].get("email", ""), "text/plain")
            return self._reply(404, "not found", "text/plain")

        def _reply(self, status, text, content_type):
            send_metadata(self, status, text, content_type)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
