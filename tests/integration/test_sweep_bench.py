"""bench.sweep on the gcp code path: N separate run-batch calls against the fake Compute API, one
sweep against the fake Cloud Batch API. Asserts counts, never times; prints the figures the
README quotes (MLBATCH_BENCH_TASKS=16 for the README's; 4 by default to keep CI short)."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core.bucket import open_bucket
from mlbatch.core.settings import load_settings
from mlbatch.providers.batch import BatchJobs
from mlbatch.providers.gce import GceProvider
from mlbatch.release.flow import release
from mlbatch.run.sweep_batch import BatchTasks
from mlbatch.run.sweep_bench import bench_sweep
from mlbatch.ui import Steps
from tests.conftest import ROOT, make_settings, repo_config, unique_version
from tests.support.fake_batch import FakeBatch
from tests.support.fake_compute import FakeCompute

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes
PROJECT = "mlbatch-test"


def test_a_sweep_makes_fewer_api_calls_than_separate_runs(infra, gcs_emulator, capsys):
    from tests.support.gcs import create_bucket

    bucket = f"gs://mlbatch-bench-{int(time.time())}"
    create_bucket(bucket[5:])
    local = release(make_settings(bucket), unique_version(), Steps())
    compute = FakeCompute(PROJECT, storage_emulator=gcs_emulator).start()
    batch = FakeBatch(PROJECT, storage_emulator=gcs_emulator).start()
    try:
        link = compute.add_image(local.vm_image.name, local.vm_image.ref)
        batch.add_image(local.vm_image.name, local.vm_image.ref)
        gcp = dataclasses.replace(
            local, version=local.version + ".bench", profile="test", vm_image=dataclasses.replace(local.vm_image, ref=link)
        )
        manifests.publish(open_bucket(bucket), gcp)
        config = repo_config()
        config["profile"] = "test"
        config["profiles"]["test"].update(bucket=bucket, compute_endpoint=compute.endpoint, batch_endpoint=batch.endpoint)
        settings = load_settings(config, ROOT)
        jobs = BatchJobs(settings)
        tasks = int(os.environ.get("MLBATCH_BENCH_TASKS", "4"))
        lines: list[str] = []
        rows = bench_sweep(
            open_bucket(bucket), GceProvider(settings), BatchTasks(open_bucket(bucket), jobs, lines.append), jobs,
            gcp.version, tasks, min(4, tasks), lines.append,
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
