"""bench.sweep on the gcp code path: N separate run-batch calls against the fake Compute API, one
sweep against the fake Cloud Batch API. Asserts counts, never times; prints the figures the
README quotes (MLBATCH_BENCH_TASKS=16 for the README's; 4 by default to keep CI short)."""

from __future__ import annotations

import os

import pytest

from mlbatch.core.bucket import open_bucket
from mlbatch.providers.gce import GceProvider
from mlbatch.run.sweep_bench import bench_sweep
from mlbatch.run.sweep_runners import task_runner
from tests.integration.helpers import release_for_test_profile, settings_for_test_profile
from tests.support.fake_batch import FakeBatch
from tests.support.fake_compute import FakeCompute

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes
PROJECT = "mlbatch-test"


def test_a_sweep_makes_fewer_api_calls_than_separate_runs(infra, gcs_emulator, capsys):
    compute = FakeCompute(PROJECT, storage_emulator=gcs_emulator).start()
    batch = FakeBatch(PROJECT, storage_emulator=gcs_emulator).start()
    try:
        bucket, version = release_for_test_profile("bench", compute, batch)
        settings = settings_for_test_profile(bucket, compute_endpoint=compute.endpoint, batch_endpoint=batch.endpoint)
        compute.ready_for_runs(settings.region, settings.network, settings.service_account)
        batch.grant_runner(settings.service_account)
        tasks = int(os.environ.get("MLBATCH_BENCH_TASKS", "4"))
        lines: list[str] = []
        runner, jobs = task_runner(settings, open_bucket(bucket), lines.append)
        rows = bench_sweep(
            open_bucket(bucket), GceProvider(settings), runner, jobs, version, tasks, min(4, tasks), lines.append,
        )  # fmt: skip
    finally:
        compute.stop()
        batch.stop()
    with capsys.disabled():
        print("\n" + "\n".join(f"{k}: {v}" for k, v in rows))
    figures = dict(rows)
    separate_calls = int(figures[f"{tasks} separate run-batch calls"].split(", ")[1].split()[0])
    sweep_calls = int(figures[f"one sweep, parallelism {min(4, tasks)}"].split(", ")[1].split()[0])
    assert batch.creates_performed == 1 and sweep_calls < separate_calls
