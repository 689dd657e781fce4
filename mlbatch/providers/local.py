"""Local provider: an instance is a container of the baked image on this machine's engine.

The agent is its entry point; it reaches the host's engine through the mounted socket,
so every path it hands to a job container must mean the same on both sides: the work
directory and a file:// bucket are mounted at their own paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlbatch.core import labels
from mlbatch.core.bucket import file_bucket_dir
from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput, InfraError
from mlbatch.core.runs import InstanceSpec
from mlbatch.core.settings import Settings
from mlbatch.local.infra import docker_client
from mlbatch.providers.base import CONSOLE_LINE_LIMIT, GONE, RUNNING, STOPPED, InstanceInfo, InstanceRequest

DOCKER_SOCKET = "/var/run/docker.sock"
STAND_IN_ENDPOINTS = (
    "STORAGE_EMULATOR_HOST",
    "API_ENDPOINT_OVERRIDE",
    "GCE_METADATA_HOST",
    "GCE_METADATA_IP",
    "MLBATCH_STS_ENDPOINT",
)


def _state(container) -> str:
    return RUNNING if container.status in ("created", "running", "restarting") else STOPPED


def _remove(client, container: str) -> None:
    """Remove a container by id or name; one that is gone, or removing itself (a detached
    instance), counts as removed."""
    import docker.errors

    try:
        client.api.remove_container(container, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc):
            raise


def _closed_on(stream, stop: threading.Event):
    """An engine stream (logs, events) that `stop` closes: a read blocked on a quiet stream ends then."""
    threading.Thread(target=lambda: (stop.wait(), stream.close()), name="close-on-stop", daemon=True).start()
    return stream


class LocalProvider:
    name = "local"
    zones: tuple[str, ...] = ("local",)
    creates_at_once = 8

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = docker_client()

    def _workdir(self, name: str) -> Path:
        return self.settings.state_dir / "instances" / name

    def _get(self, name: str):
        import docker.errors

        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    def preflight(self) -> None:
        """Nothing to check: the engine and registry are this machine's (local.up starts them)."""

    def engine_has_gpus(self) -> bool:
        """Whether the engine can give containers NVIDIA GPUs: `docker info` lists the nvidia runtime,
        which NVIDIA's container toolkit registers (`nvidia-ctk runtime configure --runtime=docker`)."""
        return "nvidia" in (self.client.info().get("Runtimes") or {})

    def check_job(self, job: Job, allow_cpu: bool = False) -> None:
        """A GPU job runs on the engine's GPUs (its agent asks for them through the engine); an engine
        without them refuses it before anything starts, unless --allow-cpu lets it run on the CPU."""
        if not job.gpu_count or allow_cpu or self.engine_has_gpus():
            return
        raise BadInput(
            f"job {job.name} asks for {job.gpu_count} {job.gpu_type} GPU(s) and this machine's Docker engine has "
            "no NVIDIA runtime (`docker info`: Runtimes has no nvidia; it needs NVIDIA's driver and container "
            "toolkit): run it on the gcp profile, or add --allow-cpu to run it on the CPU here"
        )

    def _instance(self, request: InstanceRequest) -> tuple[Path, InstanceSpec, dict[str, Any]]:
        """The instance's work dir, its instance file's contents, and what `containers.run` gets."""
        workdir = self._workdir(request.name)
        instance_file = workdir / "instance.json"
        instance = InstanceSpec(
            spec=request.spec,
            attempt=request.attempt,
            instance=request.name,
            workdir=str(workdir),
            task=request.task,
            node=request.node,
        )
        volumes = {DOCKER_SOCKET: {"bind": DOCKER_SOCKET, "mode": "rw"}, str(workdir): {"bind": str(workdir), "mode": "rw"}}
        bucket_dir = file_bucket_dir(request.spec.bucket)
        if bucket_dir is not None:
            volumes[str(bucket_dir)] = {"bind": str(bucket_dir), "mode": "rw"}
        env = {"MLBATCH_INSTANCE_FILE": str(instance_file), labels.STATE_DIR_ENV: str(self.settings.state_dir)}
        # The local profile may stand in for Google's endpoints (a GCS emulator, and in tests a
        # metadata server and STS): the instance's agent is pointed at the same ones.
        env.update({name: os.environ[name] for name in STAND_IN_ENDPOINTS if os.environ.get(name)})
        run = {
            "image": request.spec.vm_image,
            "name": request.name,
            "detach": True,
            "network_mode": "host",
            "volumes": volumes,
            "environment": env,
            "labels": {**request.labels, **labels.checkout_labels(self.settings.state_dir)},
            # A VM's agent deletes the VM; a detached local instance's container goes when its agent ends.
            "auto_remove": request.detached,
        }
        return workdir, instance, run

    def describe(self, request: InstanceRequest, zone: str) -> dict[str, Any]:
        """What `create` would do, done by nothing (`run-batch --dry-run`)."""
        _, instance, run = self._instance(request)
        return {"docker_run": run, "instance_file": instance.to_dict()}

    def create(self, request: InstanceRequest, zone: str) -> None:
        """Create and start the instance. A container of its name that is this run's attempt
        (a resumed launch whose launcher died after its create: docs/architecture.md,
        "Idempotency") is the instance, started if it never was; one that is not is refused and
        left alone, its work dir untouched (the name alone is the engine's key, as it is
        Compute Engine's: GceProvider.create takes its 409 the same way)."""
        import docker.errors

        workdir, instance, run = self._instance(request)
        run.pop("detach")  # `containers.run`'s; create and start are two calls here
        try:
            container = self.client.containers.create(run.pop("image"), **run)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            container = self._get(request.name)
            if container is None:  # removed in between: nothing of ours stands
                raise
            found = {key: container.labels.get(key) for key in ("run-id", "attempt")}
            if found != {key: request.labels.get(key) for key in found}:
                raise InfraError(
                    f"creating {request.name}: the engine has a container of that name that is not this run's "
                    f"attempt (run-id {found['run-id']!r}, attempt {found['attempt']!r}); it is left alone: "
                    f"`docker rm -f {request.name}` if it is stale"
                ) from None
            if container.status != "created":  # ours, started by the launcher that created it
                return
        workdir.mkdir(parents=True, exist_ok=True)
        Path(run["environment"]["MLBATCH_INSTANCE_FILE"]).write_text(instance.to_json())
        container.start()

    def adopt(self, name: str, zone: str) -> None:
        """One engine, one zone: a container is found by its name alone."""

    def state(self, name: str) -> str:
        container = self._get(name)
        if container is None:
            return GONE
        return _state(container)

    def was_preempted(self, name: str) -> bool:
        # Locally a "preemption" is a SIGTERM to the instance; the agent records it.
        return False

    def console(self, name: str, stop: threading.Event) -> Iterator[str]:
        """The container's output as it comes, until it ends or `stop` is set (then at once: the
        stream is closed under a quiet job's read; the bucket log has whatever was not shown)."""
        container = self._get(name)
        if container is None:
            return
        buffer = ""
        with contextlib.suppress(Exception):  # closed under us by `stop`
            for chunk in _closed_on(container.logs(stream=True, follow=True), stop):
                buffer += chunk.decode(errors="replace")
                *lines, buffer = buffer.split("\n")
                yield from lines
                if len(buffer) > CONSOLE_LINE_LIMIT:  # a line with no end (a \r progress bar): memory stays bounded
                    yield buffer
                    buffer = ""
                if stop.is_set():
                    return
        if buffer:
            yield buffer

    def ends(self, run_id: str, stop: threading.Event) -> Iterator[str]:
        """The engine's `die` events of the run's instance containers (its agent has exited,
        its records written), as they come, until `stop` is set."""
        scope = [*labels.checkout_filter(self.settings.state_dir), f"run-id={run_id}", "role=instance"]
        events = self.client.events(decode=True, filters={"type": "container", "event": "die", "label": scope})
        with contextlib.suppress(Exception):  # closed under us by `stop`, or the engine went away
            for event in _closed_on(events, stop):
                yield event.get("Actor", {}).get("Attributes", {}).get("name", "")

    def delete(self, name: str) -> None:
        """The instance, then its job containers (the agent's, if it could not remove them). The
        instance first: its agent then starts no job container after the listing (a sweep's node
        starts one a task, and one it started as this ran was left behind). By the engine's own
        removal by name and listing: two requests in all when the agent cleaned up, rather than
        `containers.list` and `containers.get`, which inspect each container first (a run's
        teardown is on every run's path)."""
        _remove(self.client, name)
        for listed in self.client.api.containers(all=True, filters={"label": f"{labels.INSTANCE}={name}"}):
            _remove(self.client, listed["Id"])  # job containers the agent started
        shutil.rmtree(self._workdir(name), ignore_errors=True)

    # containers.list inspects each container it lists: ignore_removed, because one removed in
    # between (an agent's own cleanup, a run ending) raised NotFound from a listing.
    def list_ours(self) -> list[InstanceInfo]:
        out = []
        scope = [*labels.checkout_filter(self.settings.state_dir), "role=instance"]  # not another checkout's
        for c in self.client.containers.list(all=True, ignore_removed=True, filters={"label": scope}):
            out.append(InstanceInfo(name=c.name, zone="local", state=_state(c), labels=c.labels))
        return out
