"""Task mode: the agent runs task i of a sweep and records it under tasks/<i>/.

On Cloud Batch every task gets the run's spec (MLBATCH_RUN_SPEC, the runnable's
environment), its own params and argv (MLBATCH_TASK, the task environment), and from the
service BATCH_TASK_INDEX and BATCH_TASK_RETRY_ATTEMPT. A local sweep task gets the same
through its instance file ("task": i, the spec already carrying the task's params).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Mapping

from mlbatch.core import runs
from mlbatch.core.errors import ExitCode

MAX_PROCESS_EXIT_CODE = 255  # a process's exit status is one byte


def on_batch(env: Mapping[str, str]) -> bool:
    return "BATCH_TASK_INDEX" in env and "MLBATCH_RUN_SPEC" in env


def batch_instance(env: Mapping[str, str] = os.environ) -> runs.InstanceSpec:
    """The instance spec of this Batch task: the run's spec with the task's params and argv."""
    spec = runs.RunSpec.from_json(env["MLBATCH_RUN_SPEC"], "MLBATCH_RUN_SPEC")
    task = json.loads(env.get("MLBATCH_TASK", "{}"))
    return runs.InstanceSpec(
        spec=dataclasses.replace(spec, params=task.get("params", spec.params), argv=tuple(task.get("argv", spec.argv))),
        task=int(env["BATCH_TASK_INDEX"]),
        attempt=int(env.get("BATCH_TASK_RETRY_ATTEMPT", "0")) + 1,
        instance=socket.gethostname(),  # one task a VM (taskCountPerNode 1): the VM names its job container
        workdir=env.get("MLBATCH_WORKDIR", "/var/lib/mlbatch/work"),
    )


def exit_code(status: str, job_exit_code: int) -> int:
    """The task's exit code for an attempt that ended with `status` (the job's own code when it failed).

    The runnable's exit code is what Cloud Batch's lifecycle policy acts on: the job body
    (providers/batch.py) retries a task that exits with ExitCode.PREEMPTED (or that Batch ends
    with its own preemption code) and fails any other non-zero code at once. So: 0 succeeded;
    the job's own code when it failed; our reserved code for anything else (runs.exit_code_of).
    A job's own code that is the preemption code would be retried as a preemption: it is
    reported as 1 (the attempt record keeps the job's real code)."""
    if status == runs.FAILED:
        code = min(max(job_exit_code, 1), MAX_PROCESS_EXIT_CODE)
        return 1 if code == ExitCode.PREEMPTED else code
    return runs.exit_code_of(status, job_exit_code)
