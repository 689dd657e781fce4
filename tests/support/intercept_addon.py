"""mitmdump addon (runs in mitmproxy's own venv: stdlib and mitmproxy only).

Routes the Google API hosts a Go program (Packer) calls to local fakes, checks the bearer
token as Google's front end does, answers 502 for every other host (nothing leaves this
machine) and logs each exchange as a JSON line for the tests.
"""

import json
import os
import re
import urllib.parse

from mitmproxy import http

# [[host, path prefix, target base URL, token required], ...]
ROUTES = json.loads(os.environ["MLBATCH_INTERCEPT_ROUTES"])
TOKEN = os.environ.get("MLBATCH_INTERCEPT_TOKEN", "")
# Opt-in repair of a known client defect, logged as such (see intercept.py).
REPAIR_SOURCE_DISK = os.environ.get("MLBATCH_INTERCEPT_REPAIR_SOURCE_DISK") == "1"
_UNPROJECTED_DISK = re.compile(r"^(https://[^/]+/compute/v1/)(?!projects/)([^/]+/zones/[^/]+/disks/[^/]+)$")
LOG = os.environ["MLBATCH_INTERCEPT_LOG"]


def _error(status: int, message: str, reason: str) -> http.Response:
    body = {"error": {"code": status, "message": message, "errors": [{"message": message, "reason": reason}]}}
    return http.Response.make(status, json.dumps(body), {"Content-Type": "application/json; charset=UTF-8"})


def request(flow: http.HTTPFlow) -> None:
    host, path = flow.request.pretty_host, flow.request.path
    flow.metadata["original"] = f"{flow.request.method} https://{host}{path}"
    for route_host, prefix, target, needs_token in ROUTES:
        if host != route_host or not path.startswith(prefix):
            continue
        if needs_token and flow.request.headers.get("authorization", "") != f"Bearer {TOKEN}":
            flow.response = _error(401, "Request had invalid authentication credentials.", "authError")
            return
        if REPAIR_SOURCE_DISK and flow.request.method == "POST" and path.split("?")[0].endswith("/global/images"):
            _repair_source_disk(flow)
        url = urllib.parse.urlsplit(target)
        flow.request.scheme, flow.request.host, flow.request.port = url.scheme, url.hostname, url.port
        return
    flow.response = _error(502, f"intercept: {host}{path} is not routed to a local fake", "notRouted")


def _repair_source_disk(flow: http.HTTPFlow) -> None:
    body = json.loads(flow.request.get_text() or "{}")
    match = _UNPROJECTED_DISK.match(body.get("sourceDisk", ""))
    if match:
        body["sourceDisk"] = f"{match[1]}projects/{match[2]}"
        flow.request.set_text(json.dumps(body))
        flow.metadata["repaired"] = f"sourceDisk {match[0]} -> {body['sourceDisk']}"


def response(flow: http.HTTPFlow) -> None:
    entry = {"request": flow.metadata.get("original", ""), "status": flow.response.status_code}
    if "repaired" in flow.metadata:
        entry["repaired"] = flow.metadata["repaired"]
    with open(LOG, "a") as log:
        log.write(json.dumps(entry) + "\n")
