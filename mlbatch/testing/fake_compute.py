"""A fake Compute Engine API for tests: strict about what it accepts, able to inject the
faults production brings, and backing each instance with a real container of the baked
image running the real agent (with a per-instance metadata server).

Serves the REST routes the gce provider uses: instances insert/get/delete/list/
getSerialPortOutput, zoneOperations get/wait/list, images get/getFromFamily. Every
request's parameters and body are checked against the official discovery document.
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from mlbatch.core.names import LABEL_KEY, LABEL_VALUE
from mlbatch.testing import discovery

CONTAINER_LABEL = "mlbatch-fake-compute"
_STATUS_TEXT = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


@dataclasses.dataclass
class Faults:
    """What to break, set per test. Times are in seconds of the fake's clock."""

    stockout_zones: set[str] = dataclasses.field(default_factory=set)
    quota_exceeded: bool = False
    forbidden: bool = False
    http_burst: list[int] = dataclasses.field(default_factory=list)  # statuses for the next requests
    lose_insert_responses: int = 0  # inserts performed whose response is then lost (503)
    preempt_attempts: dict[int, float] = dataclasses.field(default_factory=dict)  # attempt -> seconds after start
    early_waits: int = 0  # operations.wait calls that return at once, not DONE
    serial_buffer_bytes: int | None = None  # keep only the newest N bytes of the serial port


@dataclasses.dataclass
class FakeInstance:
    zone: str
    body: dict[str, Any]
    status: str = "PROVISIONING"
    created: float = 0.0
    container: str = ""
    serial: bytearray = dataclasses.field(default_factory=bytearray)
    serial_dropped: int = 0  # bytes rolled out of the buffer
    metadata_server: http.server.ThreadingHTTPServer | None = None
    workdir: Path | None = None

    @property
    def name(self) -> str:
        return self.body["name"]

    def metadata(self) -> dict[str, str]:
        return {i["key"]: i.get("value", "") for i in self.body.get("metadata", {}).get("items", [])}


class FakeCompute:
    def __init__(self, project: str, storage_emulator: str = "", docker_socket: str = "/var/run/docker.sock"):
        self.project = project
        self.storage_emulator = storage_emulator
        self.docker_socket = docker_socket
        self.faults = Faults()
        self.clock_offset = 0.0
        self.images: dict[str, dict[str, Any]] = {}
        self.instances: dict[tuple[str, str], FakeInstance] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.by_request_id: dict[str, str] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, body) as received
        self.inserts_performed = 0
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._workroot = Path(tempfile.mkdtemp(prefix="fake-compute-"))
        self._stop = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._reaper, daemon=True)]

    # --- lifecycle and test controls -------------------------------------------------

    def start(self) -> FakeCompute:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        with self._lock:
            for instance in list(self.instances.values()):
                self._destroy(instance)
            self.instances.clear()
        shutil.rmtree(self._workroot, ignore_errors=True)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock: max_run_duration and preemption timers see it."""
        self.clock_offset += seconds
        self._enforce_timers()

    def add_image(self, name: str, docker_ref: str, family: str = "mlbatch") -> str:
        link = f"https://www.googleapis.com/compute/v1/projects/{self.project}/global/images/{name}"
        self.images[name] = {"kind": "compute#image", "name": name, "family": family, "selfLink": link,
                             "status": "READY", "id": str(next(self._ids)),
                             "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00"),
                             "labels": {"managed-by": "mlbatch"}, "_docker_ref": docker_ref}
        return link

    def find(self, name: str) -> FakeInstance | None:
        with self._lock:
            return next((i for (_, n), i in self.instances.items() if n == name), None)

    def insert_bodies(self) -> list[dict[str, Any]]:
        return [b for m, p, b in self.requests if m == "POST" and p.endswith("/instances") and b]

    # --- HTTP plumbing ------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    return self._reply(400, _error(400, "Invalid JSON payload received."))
                status, payload = fake._dispatch(self.command, url.path, params, body)
                self._reply(status, payload)

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler

    _ROUTES = [
        ("POST", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances", "instances", "insert"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances", "instances", "list"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<instance>[^/]+)",
         "instances", "get"),
        ("DELETE", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<instance>[^/]+)",
         "instances", "delete"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<instance>[^/]+)/serialPort",
         "instances", "getSerialPortOutput"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/operations/(?P<operation>[^/]+)",
         "zoneOperations", "get"),
        ("POST", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/operations/(?P<operation>[^/]+)/wait",
         "zoneOperations", "wait"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/operations", "zoneOperations", "list"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/global/images/family/(?P<family>[^/]+)",
         "images", "getFromFamily"),
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/global/images/(?P<image>[^/]+)", "images", "get"),
    ]

    def _route(self, verb: str, path: str) -> tuple[str, str, dict[str, str]] | None:
        for route_verb, pattern, resource, name in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if route_verb == verb and match:
                return resource, name, match.groupdict()
        return None

    def _dispatch(self, verb: str, path: str, params: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((verb, path, body))
            if self.faults.http_burst:
                code = self.faults.http_burst.pop(0)
                return code, _error(code, "injected: the service is busy, try again", "backendError")
            route = self._route(verb, path)
            if route is None:
                return 404, _error(404, f"fake compute: no route for {verb} {path}", "notFound")
            resource, name, args = route
            try:
                errors = discovery.check_params(resource, name, {**params, **args})
                if name == "insert":
                    errors += discovery.check_body("Instance", body or {}, "compute.instances.insert")
                if errors:
                    raise ApiError(400, "; ".join(errors))
                if args["project"] != self.project:
                    raise ApiError(404, f"The resource 'projects/{args['project']}' was not found", "notFound")
                if self.faults.forbidden:
                    raise ApiError(403, f"Required 'compute.instances.{name}' permission for "
                                   f"'projects/{self.project}'", "forbidden")
                result = getattr(self, f"_{resource}_{name}")(params=params, body=body, **args)
            except ApiError as exc:
                return exc.code, _error(exc.code, exc.message, exc.reason)
            if name == "insert" and self.faults.lose_insert_responses > 0:
                self.faults.lose_insert_responses -= 1
                return 503, _error(503, "injected: the insert was performed but its response was lost", "backendError")
            return 200, result

    # --- operations ------------------------------------------------------------------------

    def _new_operation(self, zone: str, kind: str, target: str, request_id: str = "") -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        op = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name, "operationType": kind,
              "zone": self._zone_link(zone), "status": "RUNNING", "progress": 0,
              "targetLink": f"{self._zone_link(zone)}/instances/{target}",
              "selfLink": f"{self._zone_link(zone)}/operations/{name}",
              "insertTime": time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00")}
        self.operations[name] = op
        if request_id:
            self.by_request_id[request_id] = name
        return op

    def _finish(self, op: dict[str, Any], error: tuple[str, str] | None = None) -> None:
        with self._lock:
            op["status"], op["progress"] = "DONE", 100
            op["endTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00")
            if error:
                op["error"] = {"errors": [{"code": error[0], "message": error[1]}]}
                op["httpErrorStatusCode"] = 503 if "RESOURCE_POOL" in error[0] else 403

    def _zone_link(self, zone: str) -> str:
        return f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{zone}"

    def _zoneOperations_get(self, project, zone, operation, params, body):
        op = self.operations.get(operation)
        if op is None:
            raise ApiError(404, f"The resource 'projects/{project}/zones/{zone}/operations/{operation}' was not found",
                           "notFound")
        return op

    def _zoneOperations_wait(self, project, zone, operation, params, body):
        op = self._zoneOperations_get(project, zone, operation, params, body)
        if self.faults.early_waits > 0:
            self.faults.early_waits -= 1
            return op  # the real wait may return before DONE, too
        deadline = time.monotonic() + 2  # the real one waits up to 2 minutes
        while op["status"] != "DONE" and time.monotonic() < deadline:
            self._lock.release()
            try:
                time.sleep(0.05)
            finally:
                self._lock.acquire()
        return op

    def _zoneOperations_list(self, project, zone, params, body):
        items = [op for op in self.operations.values() if op["zone"].endswith(f"/zones/{zone}")]
        return {"kind": "compute#operationList", "items": items}

    # --- images --------------------------------------------------------------------------------

    def _image(self, name: str) -> dict[str, Any]:
        if name not in self.images:
            raise ApiError(404, f"The resource 'projects/{self.project}/global/images/{name}' was not found", "notFound")
        return {k: v for k, v in self.images[name].items() if not k.startswith("_")}

    def _images_get(self, project, image, params, body):
        return self._image(image)

    def _images_getFromFamily(self, project, family, params, body):
        named = sorted((i for i in self.images.values() if i["family"] == family), key=lambda i: i["creationTimestamp"])
        if not named:
            raise ApiError(404, f"The resource 'projects/{project}/global/images/family/{family}' was not found", "notFound")
        return self._image(named[-1]["name"])

    # --- instances -----------------------------------------------------------------------------

    def _instances_insert(self, project, zone, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:  # the real API deduplicates retried inserts by requestId
            return self.operations[self.by_request_id[request_id]]
        name = body["name"]
        if (zone, name) in self.instances:
            raise ApiError(409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
                           "alreadyExists")
        for key, value in (body.get("labels") or {}).items():
            if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                raise ApiError(400, f"Invalid value for field 'resource.labels': '{key}={value}'. "
                               "Label keys and values must be lowercase [a-z0-9_-], at most 63 characters")
        if sum(len(i.get("value", "")) for i in body.get("metadata", {}).get("items", [])) > 512 * 1024:
            raise ApiError(400, "Metadata exceeds the 512 KB limit")
        source = body.get("disks", [{}])[0].get("initializeParams", {}).get("sourceImage", "")
        image = source.rstrip("/").split("/")[-1]
        self._image(image)  # 404 for an image that does not exist
        op = self._new_operation(zone, "insert", name, request_id)
        if zone in self.faults.stockout_zones:
            self._finish(op, ("ZONE_RESOURCE_POOL_EXHAUSTED",
                              f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
                              "to fulfill the request. Try a different zone, or try again later."))
            return op
        if self.faults.quota_exceeded:
            self._finish(op, ("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded. Limit: 8.0 in region europe-west4."))
            return op
        instance = FakeInstance(zone=zone, body={**body, "id": str(next(self._ids)), "kind": "compute#instance",
                                                 "zone": self._zone_link(zone),
                                                 "selfLink": f"{self._zone_link(zone)}/instances/{name}"},
                                created=self.now())
        self.instances[(zone, name)] = instance
        self.inserts_performed += 1
        threading.Thread(target=self._boot, args=(instance, self.images[image]["_docker_ref"], op), daemon=True).start()
        return op

    def _get_instance(self, zone: str, name: str) -> FakeInstance:
        instance = self.instances.get((zone, name))
        if instance is None:
            raise ApiError(404, f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found",
                           "notFound")
        return instance

    def _view(self, instance: FakeInstance) -> dict[str, Any]:
        return {**instance.body, "status": instance.status}

    def _instances_get(self, project, zone, instance, params, body):
        return self._view(self._get_instance(zone, instance))

    def _instances_list(self, project, zone, params, body):
        items = [self._view(i) for (z, _), i in self.instances.items() if z == zone]
        match = re.fullmatch(r"labels\.([a-z0-9_-]+)\s*=\s*\"?([a-z0-9_-]*)\"?", params.get("filter", "").strip())
        if match:
            items = [i for i in items if (i.get("labels") or {}).get(match[1]) == match[2]]
        return {"kind": "compute#instanceList", "items": items}

    def _instances_delete(self, project, zone, instance, params, body):
        request_id = params.get("requestId", "")
        if request_id in self.by_request_id:
            return self.operations[self.by_request_id[request_id]]
        target = self._get_instance(zone, instance)
        target.status = "STOPPING"
        op = self._new_operation(zone, "delete", instance, request_id)
        threading.Thread(target=self._delete_later, args=(target, op), daemon=True).start()
        return op

    def _instances_getSerialPortOutput(self, project, zone, instance, params, body):
        target = self._get_instance(zone, instance)
        start = int(params.get("start", 0))
        # Like the real API: a start older than the buffer returns from the oldest byte kept.
        start = max(start, target.serial_dropped)
        data = bytes(target.serial[start - target.serial_dropped:])
        return {"kind": "compute#serialPortOutput", "contents": data.decode(errors="replace"),
                "start": str(start), "next": str(start + len(data)), "selfLink": target.body["selfLink"]}

    # --- instance backing: a container of the image, running the real agent -----------------

    def _boot(self, instance: FakeInstance, docker_ref: str, op: dict[str, Any]) -> None:
        instance.workdir = self._workroot / instance.name
        instance.workdir.mkdir(parents=True, exist_ok=True)
        instance.metadata_server = _metadata_server(self, instance)
        md_host = f"127.0.0.1:{instance.metadata_server.server_port}"
        argv = ["docker", "run", "-d", "--network", "host", "--name", f"fakegce-{instance.zone}-{instance.name}",
                "--label", f"managed-by={CONTAINER_LABEL}", "-v", f"{self.docker_socket}:/var/run/docker.sock",
                "-v", f"{instance.workdir}:{instance.workdir}", "-e", f"GCE_METADATA_HOST={md_host}",
                "-e", f"MLBATCH_WORKDIR={instance.workdir}"]
        if self.storage_emulator:
            argv += ["-e", f"STORAGE_EMULATOR_HOST={self.storage_emulator}"]
        result = subprocess.run([*argv, docker_ref], capture_output=True, text=True)
        with self._lock:
            if result.returncode != 0:
                self._finish(op, ("RESOURCE_OPERATION_RATE_EXCEEDED", result.stderr.strip()))
                return
            instance.container = result.stdout.strip()
            instance.status = "RUNNING"
        self._finish(op)
        threading.Thread(target=self._follow_serial, args=(instance,), daemon=True).start()

    def _follow_serial(self, instance: FakeInstance) -> None:
        proc = subprocess.Popen(["docker", "logs", "-f", instance.container], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            with self._lock:
                instance.serial += chunk
                limit = self.faults.serial_buffer_bytes
                if limit is not None and len(instance.serial) > limit:
                    drop = len(instance.serial) - limit
                    del instance.serial[:drop]
                    instance.serial_dropped += drop
        proc.wait()
        with self._lock:  # the agent ended: a VM whose OS halted is TERMINATED
            if instance.status in ("RUNNING", "STOPPING") and (instance.zone, instance.name) in self.instances:
                instance.status = "TERMINATED" if instance.status == "RUNNING" else instance.status

    def _delete_later(self, instance: FakeInstance, op: dict[str, Any]) -> None:
        # Like GCE: the guest gets a shutdown signal and up to ~90 s; the agent needs much less.
        self._stop_container(instance, grace=30)
        with self._lock:
            self._remove(instance)
        self._finish(op)

    def _stop_container(self, instance: FakeInstance, grace: int) -> None:
        if instance.container:
            subprocess.run(["docker", "stop", "-t", str(grace), instance.container], capture_output=True)

    def _remove(self, instance: FakeInstance) -> None:
        """The instance is deleted: its container, metadata server and work dir go, and so does its name."""
        self._destroy(instance)
        self.instances.pop((instance.zone, instance.name), None)

    def _destroy(self, instance: FakeInstance) -> None:
        if instance.container:
            subprocess.run(["docker", "rm", "-f", instance.container], capture_output=True)
        # Job containers the agent started run "on the VM": they go with it.
        jobs = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=org.mlbatch.instance={instance.name}"],
                              capture_output=True, text=True).stdout.split()
        if jobs:
            subprocess.run(["docker", "rm", "-f", *jobs], capture_output=True)
        if instance.metadata_server:
            instance.metadata_server.shutdown()
        if instance.workdir:
            shutil.rmtree(instance.workdir, ignore_errors=True)

    def _preempt(self, instance: FakeInstance) -> None:
        """Spot preemption: ACPI shutdown (SIGTERM to the agent), ~30 s, then the termination action."""
        op = self._new_operation(instance.zone, "compute.instances.preempted", instance.name)
        instance.status = "STOPPING"
        self._stop_container(instance, grace=30)
        with self._lock:
            action = instance.body.get("scheduling", {}).get("instanceTerminationAction", "STOP")
            if action == "DELETE":
                self._remove(instance)
            else:
                instance.status = "TERMINATED"
        self._finish(op)

    def _enforce_timers(self) -> None:
        with self._lock:
            instances = list(self.instances.values())
        for instance in instances:
            if instance.status not in ("RUNNING", "TERMINATED"):
                continue
            age = self.now() - instance.created
            attempt = instance.body.get("labels", {}).get("attempt", "")
            preempt_at = self.faults.preempt_attempts.get(int(attempt) if attempt.isdigit() else -1)
            spot = instance.body.get("scheduling", {}).get("provisioningModel") == "SPOT"
            if preempt_at is not None and spot and age >= preempt_at and instance.status == "RUNNING":
                threading.Thread(target=self._preempt, args=(instance,), daemon=True).start()
                continue
            max_run = instance.body.get("scheduling", {}).get("maxRunDuration", {}).get("seconds")
            if max_run is not None and age >= int(max_run):
                self._terminate_at_max_run(instance)

    def _terminate_at_max_run(self, instance: FakeInstance) -> None:
        action = instance.body.get("scheduling", {}).get("instanceTerminationAction", "STOP")
        with self._lock:
            if action == "DELETE":
                self._new_operation(instance.zone, "delete", instance.name)
                self._remove(instance)
            else:
                self._stop_container(instance, grace=1)
                instance.status = "TERMINATED"

    def _reaper(self) -> None:
        while not self._stop.wait(0.2):
            self._enforce_timers()


def _error(code: int, message: str, reason: str = "invalid") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": _STATUS_TEXT.get(code, "UNKNOWN"),
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def _metadata_server(fake: FakeCompute, instance: FakeInstance) -> http.server.ThreadingHTTPServer:
    """The instance's metadata server: attributes, name, zone, project, a token."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._reply(403, "Missing Metadata-Flavor:Google header", "text/plain")
            path = urllib.parse.urlsplit(self.path).path.removeprefix("/computeMetadata/v1/")
            attrs = instance.metadata()
            if path.startswith("instance/attributes/") and path.split("/", 2)[2] in attrs:
                return self._reply(200, attrs[path.split("/", 2)[2]], "text/plain")
            values = {"instance/name": instance.name, "instance/zone": f"projects/123456/zones/{instance.zone}",
                      "project/project-id": fake.project, "instance/id": instance.body["id"]}
            if path in values:
                return self._reply(200, values[path], "text/plain")
            if path.startswith("instance/service-accounts/default/token"):
                token = {"access_token": "fake-token", "expires_in": 3600, "token_type": "Bearer"}
                return self._reply(200, json.dumps(token), "application/json")
            if path.startswith("instance/service-accounts/default/email"):
                return self._reply(200, instance.body.get("serviceAccounts", [{}])[0].get("email", ""), "text/plain")
            return self._reply(404, "not found", "text/plain")

        def _reply(self, status, text, content_type):
            data = text.encode()
            self.send_response(status)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
