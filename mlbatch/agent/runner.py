"""One attempt on the instance: pull, fetch, run, upload, record (docs/architecture.md, "Runs")."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import requests

from mlbatch import __version__
from mlbatch.agent import gpu, jobnet
from mlbatch.agent.logsink import LogSink
from mlbatch.core import labels, runs
from mlbatch.core.access import GoogleAccess, access_boundary
from mlbatch.core.bucket import Bucket, open_bucket
from mlbatch.core.bundle import extract_bundle
from mlbatch.core.errors import AlreadyExists, FetchFailed, GpuUnavailable
from mlbatch.core.names import managed_labels
from mlbatch.core.sweeps import RecordKeys

JOB_STOP_GRACE = 10  # seconds the job gets between SIGTERM and SIGKILL
OUTPUT_DRAIN_LIMIT = 1800  # seconds the agent waits for the output of a job that has exited
DRAIN_REPORT_EVERY = 30
CONTAINER_CODE_DIR = "/code"
CONTAINER_RESULTS_DIR = "/results"
# Under memory pressure of the whole VM the kernel kills the job before the engine (-500) and
# the agent (its unit's OOMScoreAdjust=-900): the agent lives to record why the job ended.
JOB_OOM_SCORE_ADJ = 500
KILLED = 128 + 9  # a process ended by SIGKILL, as the engine reports its exit code


class Preempted(BaseException):
    """Raised from the SIGTERM handler; a BaseException so no `except Exception` swallows it.
    `preempted` says whether the platform is preempting the instance (retried) or ending it
    for another reason (a delete, a stop, its max run duration: not retried)."""

    def __init__(self, message: str, preempted: bool = True):
        super().__init__(message)
        self.preempted = preempted


def _job_labels(instance: str) -> dict[str, str]:
    """A job container's labels: ours, its instance's, and the checkout's scope on a local instance."""
    scope = os.environ.get(labels.STATE_DIR_ENV)
    found = labels.checkout_labels(scope) if scope else managed_labels()
    return {**found, labels.INSTANCE: instance, labels.ROLE: "job"}


def _job_env(spec: runs.RunSpec, attempt: int) -> dict[str, str]:
    env = {
        "MLBATCH_RESULTS_DIR": CONTAINER_RESULTS_DIR,
        "MLBATCH_RUN_ID": spec.run_id,
        "MLBATCH_VERSION": spec.version,
        "MLBATCH_ATTEMPT": str(attempt),
        "MLBATCH_JOB": spec.job,
    }
    env.update({f"MLBATCH_PARAM_{k.upper()}": str(v) for k, v in spec.params.items()})
    return env


def job_limits(spec: runs.RunSpec) -> dict[str, Any]:
    """The engine's arguments for the job container's limits (the run spec's, from its machine type)."""
    limits: dict[str, Any] = {"oom_score_adj": JOB_OOM_SCORE_ADJ}
    if spec.memory_limit_mb:  # no swap beyond it: the limit is the job's memory
        limits.update(mem_limit=f"{spec.memory_limit_mb}m", memswap_limit=f"{spec.memory_limit_mb}m")
    if spec.pids_limit:
        limits["pids_limit"] = spec.pids_limit
    return limits


def killed_for_memory(state: dict[str, Any], memory_limit_mb: int) -> str:
    """Why a job that failed ended, when memory ended it ("" otherwise), from the engine's container state.

    The engine sets `OOMKilled` when the kernel's OOM killer ended a process of the container
    (cgroup v2: memory.events, as on Debian 12 VMs). Docker on cgroup v1 with a recent kernel may
    never learn of it; there a job under a memory limit ended by SIGKILL that the agent did not
    send (a timeout or a shutdown are recorded otherwise) is taken for one, and the message says so."""
    at = f" at {memory_limit_mb} MB limit" if memory_limit_mb else " (the VM's: no limit was set)"
    if state.get("OOMKilled"):
        return f"killed: out of memory{at}"
    if memory_limit_mb and state.get("ExitCode") == KILLED:
        return (
            f"killed: out of memory{at} (SIGKILL under the limit; this engine did not report an OOM kill, "
            "as Docker on cgroup v1 may not)"
        )
    return ""


def upload_results(bucket: Bucket, results: Path, prefix: str, say: Callable[[str], None]) -> int:
    """Upload the regular files under `results`, streamed from disk.

    The directory is the job's: anything in it may be hostile. Nothing here follows a link
    (a link to /etc/... would publish the instance's files), and nothing is opened but a
    regular file reached through real directories under `results`; links, FIFOs, sockets and
    devices are skipped, each with a line in the run's log.
    """
    count = 0
    root = results.resolve()
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                say(f"skipped {(here / name).relative_to(root).as_posix()}: a symlink, not uploaded")
        dirs.sort()
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(root).as_posix()
            if not relative.isprintable() or relative != relative.encode("utf-8", "replace").decode():
                say(f"skipped {relative!r}: its name is not printable UTF-8, which an object name must be")
                continue
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else f"not a regular file ({stat.filemode(mode)})"
                say(f"skipped {relative}: {kind}, not uploaded")
                continue
            try:  # O_NOFOLLOW: a file swapped for a link after the check is refused, not followed
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                say(f"skipped {relative}: {exc.strerror}")
                continue
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    say(f"skipped {relative}: not a regular file, not uploaded")
                    continue
                bucket.upload(f"{prefix}/{relative}", Path(f"/proc/self/fd/{fh.fileno()}"))
            count += 1
    say(f"uploaded {count} result file(s) to {bucket.url(prefix)}")
    return count


# Google endpoints a local instance is pointed at in tests; a job with google_access gets them too.
ENDPOINT_ENV = ("API_ENDPOINT_OVERRIDE",)


@dataclasses.dataclass
class Reuse:
    """What an attempt sets up and a later attempt of the same agent may use. A single run's
    attempt has one of its own, empty; a sweep node's attempts share one (agent/node.py), each
    task being the same release's: one engine client, the container checked once, the code
    bundle fetched and checked once (it is mounted read-only into every job container, so no
    task changes it for the next)."""

    code_dir: Path  # where the code bundle is, once fetched
    client: Any = None
    pulled: str | None = None  # the container checked or pulled
    fetched: str | None = None  # the sha256 of the code bundle fetched and checked into code_dir


class Attempt:
    def __init__(
        self,
        spec: runs.RunSpec,
        attempt: int,
        instance: str,
        workdir: Path,
        keys: RecordKeys | None = None,
        on_vm: bool = False,
    ):
        self.spec, self.attempt, self.instance, self.on_vm = spec, attempt, instance, on_vm
        self.keys = keys or RecordKeys.for_run(spec.run_id, attempt)
        self.workdir = workdir
        self.bucket = open_bucket(spec.bucket)
        self.phases: dict[str, float] = {}
        self.container: Any = None
        self.gpu_view: dict[str, Any] = {}  # nvidia-smi's view of a GPU job's GPUs
        self.device_requests: list[Any] = []  # the job container's GPUs (docker run --gpus N)
        self.started = runs.now_iso()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = LogSink(
            self.bucket,
            self.keys.log,
            workdir / "attempt.log",
            max_bytes=spec.max_log_bytes,
        )

    # --- phases ---------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the phase, having told the controller it began (progress.json): its deadline
        gives each phase its own margin (a slow pull, a big upload), not one shared margin."""
        progress = runs.ProgressRecord(run_id=self.spec.run_id, attempt=self.attempt, phase=name, since=runs.now_iso())
        try:
            runs.write_record(self.bucket, self.keys.progress, progress)
        except Exception as exc:  # the deadline then runs from the previous phase: worth a line, not the attempt
            self.log.info(f"could not record the {name} phase: {type(exc).__name__}: {exc}")
        with runs.timed(self.phases, name):
            yield

    def find_gpus(self, client, on_vm: bool) -> None:
        """A GPU job's GPUs (mlbatch/agent/gpu.py), after the pull: the driver on a VM, then the
        job's image with its device request. Without them the attempt fails (104), or with
        --allow-cpu the job runs on the CPU and its log says so."""
        if not self.spec.gpu_count:
            return
        try:
            if on_vm:
                self.gpu_view = gpu.host_view()
            self.gpu_view = gpu.container_view(client, self.spec.container, self.spec.gpu_count, _job_labels(self.instance))
        except GpuUnavailable as exc:
            if not self.spec.allow_cpu:
                raise
            self.log.info(f"no GPU for the job ({exc}); it runs on the CPU, as --allow-cpu asked")
            return
        self.device_requests = gpu.device_requests(self.spec.gpu_count)
        names = ", ".join(g["name"] for g in self.gpu_view["gpus"])
        self.log.info(f"GPUs: {names} (driver {self.gpu_view['driver']})")

    def pull(self, client, registry_login: bool, reuse: Reuse) -> None:
        if reuse.pulled == self.spec.container:
            self.log.info(f"{self.spec.container} is here since an earlier task: no pull")
            return
        self._pull(client, registry_login)
        reuse.pulled = self.spec.container

    def _pull(self, client, registry_login: bool) -> None:
        if "@sha256:" in self.spec.container and _present(client, self.spec.container):
            # Pre-pulled into the VM image at bake time; a digest names exactly these bytes.
            self.log.info(f"{self.spec.container} is pre-pulled in the image: no pull")
            return
        self.log.info(f"pulling {self.spec.container}")
        try:
            if registry_login:
                from mlbatch.agent.gce import registry_login as login

                login(client, self.spec.container)
            client.images.pull(self.spec.container)
        except Exception as exc:
            raise FetchFailed(f"cannot pull {self.spec.container}: {exc}") from exc

    def fetch(self, reuse: Reuse) -> Path:
        if reuse.fetched == self.spec.code_sha256:
            self.log.info(f"code {self.bucket.url(self.spec.code_key)}: fetched for an earlier task, sha256 checked")
            return reuse.code_dir
        self.log.info(f"fetching code {self.bucket.url(self.spec.code_key)}")
        try:
            data = self.bucket.read(self.spec.code_key)
        except Exception as exc:
            raise FetchFailed(f"cannot fetch the code bundle: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.spec.code_sha256:
            raise FetchFailed(f"code bundle sha256 {digest} does not match the release's {self.spec.code_sha256}")
        shutil.rmtree(reuse.code_dir, ignore_errors=True)
        extract_bundle(data, reuse.code_dir)
        reuse.fetched = digest
        return reuse.code_dir

    @contextlib.contextmanager
    def job_network(self, client) -> Iterator[jobnet.JobNetwork]:
        """The job container's network, its extra environment and its token server, if any.
        docs/architecture.md, "Jobs and the VM's credentials"."""
        if not self.spec.network:
            self.log.info("job network: none (the job declares no network and no google_access)")
            yield jobnet.JobNetwork({"network_mode": jobnet.NO_NETWORK})
            return
        if self.on_vm:
            jobnet.block_metadata_server()  # raises, and the job never starts, if it cannot
            network, token_host = jobnet.jobs_network(client)
            arguments: dict[str, Any] = {"network": network}
            where = f"{network}; the metadata server is out of its reach"
        else:  # a local instance: no VM credentials to keep from the job; it shares the host's network as the instance does
            arguments, token_host = {"network_mode": jobnet.HOST_NETWORK}, jobnet.LOOPBACK
            where = "the host's (a local instance)"
        access = GoogleAccess.from_dict(self.spec.google_access).for_run(self.spec.job, self.spec.run_id)
        if not access:
            self.log.info(f"job network: {where}; no Google credentials")
            yield jobnet.JobNetwork(arguments)
            return
        if not (self.on_vm or (os.environ.get("GCE_METADATA_HOST") and self.spec.bucket.startswith("gs://"))):
            self.log.info(f"job network: {where}; google_access: a local instance has no Google credentials to downscope")
            yield jobnet.JobNetwork(arguments)
            return
        server = self._token_server(access, token_host)
        self.log.info(
            f"job network: {where}; Google credentials: {server.email} downscoped to read {list(access.read + access.write)} "
            f"and write {list(access.write)} of {self.spec.bucket}, served at {server.address} to the job alone"
        )
        extra = {**server.environment(), **{k: os.environ[k] for k in ENDPOINT_ENV if os.environ.get(k)}}
        try:
            with server:
                yield jobnet.JobNetwork(arguments, extra, server)
        finally:
            for refusal in server.refused:
                self.log.info(f"job token server refused: {refusal}")

    def _token_server(self, access: GoogleAccess, host: str):
        from mlbatch.agent import gce, tokens

        token = tokens.JobToken(access_boundary(self.spec.bucket, access), os.environ.get("MLBATCH_STS_ENDPOINT", tokens.STS_URL))
        email = gce.metadata("instance/service-accounts/default/email", retry_for=30.0)
        project = gce.metadata("project/project-id", retry_for=30.0)
        return tokens.TokenServer(token, host, email, project)

    def run(self, client, code: Path) -> tuple[str, int, str]:
        """Run the job to its end: (status, exit code, message: why it was killed, or "")."""
        with self.job_network(client) as network:
            return self._run(client, code, network)

    def _run(self, client, code: Path, network: jobnet.JobNetwork) -> tuple[str, int, str]:
        results = self.workdir / "results"
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        self.log.info(f"running {list(self.spec.argv)} (timeout {self.spec.timeout_seconds}s)")
        # Created, attached, then started (as `docker run` does): the attach stream carries the
        # job's raw bytes from its first one; the engine's json-file log would turn bytes that
        # are not UTF-8 into U+FFFD, so `logs()` cannot be the record.
        self.container = client.containers.create(
            self.spec.container,
            list(self.spec.argv),
            name=f"{self.instance}-job",
            working_dir=CONTAINER_CODE_DIR,
            environment={**_job_env(self.spec, self.attempt), **network.environment},
            volumes={
                str(code): {"bind": CONTAINER_CODE_DIR, "mode": "ro"},
                str(results): {"bind": CONTAINER_RESULTS_DIR, "mode": "rw"},
            },
            labels=_job_labels(self.instance),
            **job_limits(self.spec),
            device_requests=self.device_requests or None,
            **network.arguments,
        )
        output = self.container.attach(stdout=True, stderr=True, stream=True, logs=False)
        pump = threading.Thread(target=self._pump_logs, args=(output,), name="job-output", daemon=True)
        pump.start()
        self.container.start()
        network.admit(self.container)  # its token goes to this container's address and no other
        deadline = time.monotonic() + self.spec.timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.log.info(f"timeout: the job ran longer than {self.spec.timeout_seconds}s; stopping it")
                self.container.stop(timeout=JOB_STOP_GRACE)
                self._drain(pump)
                return runs.TIMEOUT, -1, ""
            try:  # block on the engine rather than poll; short slices keep the deadline exact
                code_ = int(self.container.wait(timeout=min(remaining, 10))["StatusCode"])
                break
            except requests.exceptions.RequestException:  # this slice timed out: the job still runs
                continue
        self._drain(pump)
        self.log.info(f"job exited with code {code_}")
        self.container.reload()
        killed = killed_for_memory(self.container.attrs.get("State", {}), self.spec.memory_limit_mb)
        if killed and code_ == 0:  # a process of the job was killed, the job itself carried on
            self.log.info(f"a process of the job was {killed}")
            killed = ""
        elif killed:
            self.log.info(f"job {killed}")
        return (runs.SUCCEEDED if code_ == 0 else runs.FAILED), code_, killed

    def _drain(self, pump: threading.Thread) -> None:
        """Wait until the engine has handed over the job's last byte: the tail is what a user reads first."""
        waited = 0
        while pump.is_alive() and waited < OUTPUT_DRAIN_LIMIT:
            pump.join(timeout=DRAIN_REPORT_EVERY)
            waited += DRAIN_REPORT_EVERY
            if pump.is_alive():
                self.log.info(f"the job has ended; its output is still draining ({self.log.written} bytes logged so far)")
        if pump.is_alive():
            self.log.info(f"log truncated: the job's output did not end within {OUTPUT_DRAIN_LIMIT}s of the job")

    def _pump_logs(self, output: Iterable[bytes]) -> None:
        """The job's stdout and stderr as raw bytes, in the order the engine hands them over (no decoding, no line splitting)."""
        try:
            for chunk in output:
                self.log.write_bytes(chunk)
        except Exception as exc:  # the job container went away under us (instance deleted)
            self.log.info(f"job output stream ended: {type(exc).__name__}")

    def upload(self) -> int:
        return upload_results(self.bucket, self.workdir / "results", self.keys.results, self.log.info)

    def remove_job_container(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception as exc:
                self.log.info(f"could not remove the job container: {exc}")

    # --- records --------------------------------------------------------------------

    def record(self, status: str, exit_code: int, message: str = "") -> runs.AttemptRecord:
        record = runs.AttemptRecord(
            run_id=self.spec.run_id,
            job=self.spec.job,
            version=self.spec.version,
            attempt=self.attempt,
            instance=self.instance,
            status=status,
            exit_code=exit_code,
            message=message,
            started=self.started,
            finished=runs.now_iso(),
            phases=self.phases,
            provenance=runs.Provenance.of(self.spec, agent=__version__),
            results=self.bucket.url(self.keys.results),
            gpu=self.gpu_view,
        )
        runs.write_record(self.bucket, self.keys.attempt, record)
        # A preempted attempt is retried; anything else ends the run (a sweep's task ends only itself).
        if self.keys.result and status != runs.PREEMPTED:
            with contextlib.suppress(AlreadyExists):  # the controller recorded the end first (cancel)
                runs.write_record(self.bucket, self.keys.result, runs.ResultRecord.of_attempt(record), immutable=True)
        print(f"{runs.AGENT_RECORDED_MARKER}: attempt {self.attempt} {status}", flush=True)  # the controller reads them now
        return record


def _present(client, ref: str) -> bool:
    import docker

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def run_attempt(
    spec: runs.RunSpec,
    attempt: int,
    instance: str,
    workdir: Path,
    registry_login: bool = False,
    keys: RecordKeys | None = None,
    on_vm: bool = False,
    reuse: Reuse | None = None,
) -> runs.AttemptRecord:
    """One attempt, start to record; the attempt's record. `on_vm`: the agent runs on the VM itself
    (GCE, Batch), whose GPU driver it checks; a local instance's GPUs are the engine's. `reuse`:
    what an earlier attempt of the same node left to use (agent/node.py); a single run's is its own."""
    import docker

    reuse = reuse if reuse is not None else Reuse(code_dir=workdir / "code")
    att = Attempt(spec, attempt, instance, workdir, keys, on_vm=registry_login)
    att.log.info(f"agent on {instance}: run {spec.run_id} attempt {attempt}, release {spec.version}")
    status, exit_code, message = runs.INFRA_FAILED, -1, ""
    try:
        if reuse.client is None:
            reuse.client = docker.from_env(timeout=300)
        client = reuse.client
        with att.phase(runs.PULL):
            att.pull(client, registry_login, reuse)
        att.find_gpus(client, on_vm)
        with att.phase(runs.FETCH):
            code = att.fetch(reuse)
        with att.phase(runs.RUN):
            status, exit_code, message = att.run(client, code)
        with att.phase(runs.UPLOAD):
            att.upload()
    except Preempted as exc:
        if exc.preempted:
            status, message = runs.PREEMPTED, f"instance is being stopped ({exc}): attempt preempted"
        else:
            status, message = runs.INFRA_FAILED, f"instance is being shut down ({exc}) and it is not a preemption"
        att.log.info(message)
        if att.container is not None:
            att.container.stop(timeout=JOB_STOP_GRACE)
    except FetchFailed as exc:
        status, message = runs.FETCH_FAILED, str(exc)
        att.log.info(message)
    except Exception as exc:
        status, message = runs.INFRA_FAILED, f"{type(exc).__name__}: {exc}"
        att.log.info(f"agent error: {message}")
    finally:
        att.remove_job_container()
    att.log.info(f"attempt {attempt} {status}")
    try:
        att.log.close()
    except Exception as exc:  # the bucket stayed down through every retry: still record how the attempt ended
        print(f"[mlbatch] the last log flush failed: {exc}", flush=True)
    return att.record(status, exit_code, message)
