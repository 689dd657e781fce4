"""mlbatch-agent: the instance's entry point.

Reads its instance spec, runs one attempt of the run (pull, fetch, run, upload), records
how it ended, then ends the instance: the local instance's container exits; a GCE VM
deletes itself. On SIGTERM it asks the metadata server whether this is a preemption
(instance/preempted): a preemption gives ~30 s, in which the agent stops the job, flushes
the log and records the attempt as preempted (retried); any other shutdown is recorded as
a failure (not retried).

Fail-safe: whatever goes wrong (metadata unreachable at boot, bucket down, a bug), the
agent prints a marker line on the console, records the attempt as failed with the reason
when it knows its run, and ends its VM. A real VM keeps running when its agent exits, so
an agent that just crashed would leave it running until the controller's timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path

from mlbatch import __version__
from mlbatch.agent import task as task_mode
from mlbatch.agent.runner import Preempted, run_attempt
from mlbatch.core import runs
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import AlreadyExists
from mlbatch.core.process import exiting
from mlbatch.core.runs import PREEMPTED, SUCCEEDED, InstanceSpec, RunSpec
from mlbatch.core.sweeps import RecordKeys


def load_instance_spec() -> tuple[InstanceSpec, bool]:
    """Local profile: the file named by MLBATCH_INSTANCE_FILE; Cloud Batch: its task
    environment; GCE: metadata attributes. The flag says whether it runs on Google Cloud."""
    path = os.environ.get("MLBATCH_INSTANCE_FILE")
    if path:
        return InstanceSpec.from_json(Path(path).read_text(), path), False
    if task_mode.on_batch(os.environ):
        return task_mode.batch_instance(os.environ), True
    from mlbatch.agent import gce

    return gce.instance_spec(), True


def _on_sigterm(signum, frame):
    if os.environ.get("MLBATCH_INSTANCE_FILE"):  # local profile: a stop is how a local instance is preempted
        raise Preempted(f"signal {signum}", preempted=True)
    from mlbatch.agent import gce

    raise Preempted(f"signal {signum}", preempted=gce.preempted())


@dataclasses.dataclass(frozen=True)
class FailureTarget:
    """Where the fail-safe records a failure: the run's bucket and id, and what is known of
    the release (nothing, when the run spec itself could not be read)."""

    bucket: str
    run_id: str
    attempt: int
    version: str = ""
    provenance: runs.Provenance | None = None

    @classmethod
    def of(cls, spec: RunSpec, attempt: int) -> FailureTarget:
        return cls(spec.bucket, spec.run_id, attempt, spec.version, runs.Provenance.of(spec, agent=__version__))


def failure_target(spec: RunSpec | None, attempt: int, on_gce: bool) -> FailureTarget | None:
    """The run to record a failure against. A GCE VM whose run spec could not be read still
    has the run's id and bucket as attributes of their own: the record in the bucket, unlike
    the console marker, outlives the VM (the controller may not read the console before the
    VM is gone)."""
    if spec is not None:
        return FailureTarget.of(spec, attempt)
    if not on_gce:
        return None
    with contextlib.suppress(Exception):
        from mlbatch.agent import gce

        reference = gce.run_reference()
        if reference is not None:
            return FailureTarget(*reference)
    return None


def fail_safe(message: str, target: FailureTarget | None, instance: str) -> None:
    """The marker on the console, and the attempt recorded as failed when the run is known."""
    line = f"{runs.AGENT_FAILED_MARKER}: {message}"
    print(line, flush=True)
    if target is None:
        return
    try:
        bucket = open_bucket(target.bucket)
        record = runs.AttemptRecord(
            run_id=target.run_id,
            job=runs.job_of_run_id(target.run_id),
            version=target.version,
            attempt=target.attempt,
            instance=instance,
            status=runs.INFRA_FAILED,
            exit_code=-1,
            message=f"agent failed: {line}",
            started="",
            finished=runs.now_iso(),
            phases={},
            provenance=target.provenance
            or runs.Provenance(version="", vm_image="", container="", code_sha256="", agent=__version__),
            results=bucket.url(runs.results_prefix(target.run_id, target.attempt)),
        )
        runs.write_record(bucket, runs.attempt_key(target.run_id, target.attempt, runs.ATTEMPT_RECORD), record)
        with contextlib.suppress(AlreadyExists):  # the agent (or the controller) recorded the end first
            runs.write_record(bucket, runs.result_key(target.run_id), runs.ResultRecord.of_attempt(record), immutable=True)
    except Exception as exc:  # the bucket is down too: the console marker is all there is
        print(f"{runs.AGENT_FAILED_MARKER}: could not record the failure: {type(exc).__name__}: {exc}", flush=True)


# What --check-run-spec exits with, as systemd's ExecCondition= reads it: 0 starts the unit,
# 1-254 skip it (not a failure), 255 fail it.
RUN_VM, NOT_A_RUN_VM, CANNOT_TELL = 0, 1, 255


def check_run_spec() -> int:
    """The agent unit's ExecCondition: start only on a run VM (one carrying mlbatch-run-spec).

    The image starts the unit at every boot, also on VMs that are not a run's: the release's
    image-test VM and every Cloud Batch task VM (whose runnable starts the agent itself). There
    the agent's fail-safe would end the VM. Ending nothing when in doubt: a metadata server that
    never answers fails the unit (a run VM is then ended by its max run duration and the
    controller's deadline)."""
    from mlbatch.agent import gce

    try:
        if gce.carries_run_spec():
            return RUN_VM
    except Exception as exc:
        print(f"mlbatch-agent: cannot tell whether this is a run VM ({type(exc).__name__}: {exc}); not started", flush=True)
        return CANNOT_TELL
    print("mlbatch-agent: no mlbatch-run-spec in this VM's metadata: not a run VM, the agent does not start", flush=True)
    return NOT_A_RUN_VM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlbatch-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlbatch-agent {__version__}")
    parser.add_argument(
        "--check-run-spec",
        action="store_true",
        help="exit 0 if this GCE VM carries a run spec (mlbatch-run-spec metadata), 1 if not, 255 if the "
        "metadata server does not answer: the systemd unit's ExecCondition",
    )
    if parser.parse_args(argv).check_run_spec:
        return check_run_spec()
    signal.signal(signal.SIGTERM, _on_sigterm)
    on_gce = not os.environ.get("MLBATCH_INSTANCE_FILE")
    spec: RunSpec | None = None
    attempt, name, status = 0, "", runs.INFRA_FAILED
    task: int | None = None
    record: runs.AttemptRecord | None = None
    try:
        instance, on_gce = load_instance_spec()
        if instance.node:  # a local sweep's node: each task it takes is recorded as its own, never the run
            from mlbatch.agent.node import run_node

            return run_node(instance)
        spec, attempt, name, task = instance.spec, instance.attempt, instance.instance, instance.task
        keys = RecordKeys.for_task(spec.run_id, task, attempt) if task is not None else None
        record = run_attempt(
            spec,
            attempt=attempt,
            instance=name,
            workdir=Path(instance.workdir),
            registry_login=on_gce,
            keys=keys,
            on_vm=on_gce,
        )
        status = record.status
    except Preempted as exc:  # before the attempt began (or after it ended): nothing of the job to save
        status = PREEMPTED if exc.preempted else runs.INFRA_FAILED
        if not exc.preempted:
            fail_safe(
                f"the instance is being shut down ({exc}) and it is not a preemption",
                failure_target(spec, attempt, on_gce),
                name,
            )
    except Exception as exc:
        fail_safe(f"{type(exc).__name__}: {exc}", failure_target(spec, attempt, on_gce), name)
    if task is not None:  # Cloud Batch tears the VM down and acts on this code (its lifecycle policy)
        return task_mode.exit_code(status, record.exit_code if record is not None else -1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # recorded: let the VM's end finish whatever comes
    if on_gce and status != PREEMPTED:  # a preempted VM is being ended by the platform already
        from mlbatch.agent import gce

        gce.end_instance()
    return 0 if status == SUCCEEDED else 1


def command() -> int:
    """The mlbatch-agent command: `main`, then the process ends at once (a local sweep's next task
    starts when this instance has ended)."""
    code = main()
    exiting()
    return code


if __name__ == "__main__":
    sys.exit(command())
