"""A bucket holding the records real runs leave: runs of one job over two releases, a failed run,
and a sweep, made by the real controller and sweep code on the in-memory provider (whose
instances write through the real agent's record path), in seconds and without an engine.

For what reads records back: `runs.show`, `invoke runs`, the dashboard.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlbatch.core.bucket import Bucket
from mlbatch.run.controller import Controller, RunRequest
from mlbatch.run.deadlines import Margins
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_local import LocalTasks
from tests.support.memory_provider import MemoryProvider, fail, succeed
from tests.support.releases import publish_release

CATALOG = """
jobs:
  train:
    container: trainer
    command: [python, train.py]
    machine_type: e2-standard-4
    spot: true
    max_preemption_retries: 1
    timeout_seconds: 600
    metric: accuracy
    metric_goal: max
    params:
      n_estimators: {type: int, default: 10}
      criterion: {type: str, default: gini, choices: [gini, entropy]}
      seed: {type: int, default: 0}
"""
VERSIONS = ("v1.0.0", "v1.1.0")
ZONES = ("europe-west4-a",)
# accuracy of each sweep task, by (n_estimators, criterion); the task with 100/entropy fails
SWEEP_ACCURACY = {(10, "gini"): 0.81, (10, "entropy"): 0.84, (50, "gini"): 0.9, (50, "entropy"): 0.92, (100, "gini"): 0.95}


class _Quick(Controller):
    poll = 0.001
    state_check_every = 0.0
    margins = Margins(start=0, run_grace=0, upload=0)
    attach_poll = 0.001


class _QuickTasks(LocalTasks):
    poll = 0.001
    state_check_every = 0.0


@dataclasses.dataclass(frozen=True)
class Records:
    runs: dict[str, str]  # what each run is -> its run id: "v1.0.0", "v1.1.0", "failed", "sweep"


def make_records(bucket: Bucket, workdir: Path) -> Records:
    """Two releases of `train`; a run on each (metrics in results/metrics.json), a failed run and a
    6-task sweep (n_estimators x criterion) whose last task fails."""
    for version in VERSIONS:
        publish_release(bucket, version, CATALOG)
    provider = MemoryProvider(workdir, zones=ZONES)
    controller = _Quick(bucket, provider, lambda _: None, lambda _: None)
    made: dict[str, str] = {}
    for version, accuracy in zip(VERSIONS, (0.88, 0.93), strict=True):
        provider.script(succeed("training", "\x1b[31mred\x1b[0m <b>not bold</b>", metrics={"accuracy": accuracy, "loss": 0.3}))
        made[version] = controller.run(RunRequest("train", version, ("n_estimators=50",))).run_id
    provider.script(fail(3, "something went wrong"))
    made["failed"] = controller.run(RunRequest("train", VERSIONS[1])).run_id
    provider.script(
        *(succeed(f"task {n} {c}", metrics={"accuracy": a, "train_seconds": n / 100}) for (n, c), a in SWEEP_ACCURACY.items()),
        fail(2, "out of memory"),
    )
    sweep = Sweep(bucket, _QuickTasks(bucket, provider, lambda _: None), lambda _: None)
    outcome, _ = sweep.run(
        SweepRequest("train", VERSIONS[1], sweeps=("n_estimators=10,50,100", "criterion=gini,entropy"), parallelism=2)
    )
    made["sweep"] = outcome.run_id
    return Records(made)
