"""Node mode: a local sweep's instance runs the sweep's tasks in turn (docs/architecture.md, "Sweeps").

A Cloud Batch VM runs one task at a time (taskCountPerNode 1, providers/batch.py) and then
the next one Batch gives it, so a sweep of 200 tasks at parallelism 4 boots about four VMs,
not 200. A local sweep's node does the same: it takes the first task no node has taken
(core/sweeps.py `claim_next`: a claim written once, so two nodes never take one task), runs
its first attempt exactly as a task's own instance would (the task's params and argv from
spec.json's plan, its records under tasks/<i>/), and takes the next, until none is left; what
the tasks share is set up once (`runner.Reuse`: the engine client, the container check, the code).
A retry runs on an instance of its own (run/sweep_local.py). A stop is how a local instance
is preempted: the attempt under way is recorded as preempted and the node ends.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from mlbatch.agent.runner import Reuse, run_attempt
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import open_bucket
from mlbatch.core.sweeps import RecordKeys

FIRST_ATTEMPT = 1  # a node runs first attempts; the controller gives each retry an instance


def run_node(instance: runs.InstanceSpec) -> int:
    """Take and run the sweep's tasks until none is left (0), or until a stop preempts one (1)."""
    spec, name = instance.spec, instance.instance
    bucket = open_bucket(spec.bucket)
    plan = sweeps.read_plan(bucket, spec.run_id)
    if plan is None:
        raise RuntimeError(f"run {spec.run_id} has no sweep plan in its spec.json: a node runs a sweep's tasks")
    reuse = Reuse(code_dir=Path(instance.workdir) / "code")
    last = -1
    while (task := sweeps.claim_next(bucket, spec.run_id, len(plan.tasks), name, last + 1)) is not None:
        last = task
        planned = plan.tasks[task]
        workdir = Path(instance.workdir) / f"task-{task}"
        record = run_attempt(
            dataclasses.replace(spec, params=planned.params, argv=planned.argv),
            attempt=FIRST_ATTEMPT,
            instance=name,
            workdir=workdir,
            keys=RecordKeys.for_task(spec.run_id, task, FIRST_ATTEMPT),
            reuse=reuse,
        )
        shutil.rmtree(workdir, ignore_errors=True)  # its results are in the bucket; the next task's come fresh
        if record.status == runs.PREEMPTED:  # the node is being stopped: take nothing more
            return 1
    return 0
