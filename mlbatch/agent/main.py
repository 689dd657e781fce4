"""mlbatch-agent: the instance's entry point.

Reads its instance spec, runs one attempt of the run (pull, fetch, run, upload), records
how it ended, then ends the instance: the local instance's container exits; a GCE VM
deletes itself. On SIGTERM (a preemption gives ~30 s) it stops the job, flushes the log
and records the attempt as preempted within 25 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from mlbatch import __version__
from mlbatch.agent import task as task_mode
from mlbatch.agent.runner import Preempted, run_attempt
from mlbatch.core.runs import PREEMPTED, SUCCEEDED, InstanceSpec
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
    raise Preempted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlbatch-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlbatch-agent {__version__}")
    parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    instance, on_gce = load_instance_spec()
    record = run_attempt(
        instance.spec,
        attempt=instance.attempt,
        instance=instance.instance,
        workdir=Path(instance.workdir),
        registry_login=on_gce,
        keys=RecordKeys.for_task(instance.spec.run_id, instance.task, instance.attempt) if instance.task is not None else None,
    )
    if instance.task is not None:  # Cloud Batch tears the VM down and acts on this code (lifecycle policies)
        return task_mode.exit_code(record)
    status = record.status
    if on_gce and status != PREEMPTED:  # a preempted VM is being stopped by the platform already
        from mlbatch.agent import gce

        gce.delete_self()
    return 0 if status == SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
