"""Sweeps on the gcp code path (the `test` profile) against the fake Cloud Batch API: strict
(batch.v1 discovery document), tasks as containers of the baked image running the real
agent, fake-gcs-server as the bucket, and the faults the real service brings."""

from __future__ import annotations

import signal
import time

import pytest

from mlbatch.core import manifest as manifests
from mlbatch.core import runs, sweeps
from mlbatch.core.bucket import open_bucket
from mlbatch.core.errors import ExitCode, PermissionDenied
from mlbatch.providers.batch import BatchJobs, job_id
from mlbatch.run.sweep import Sweep, SweepRequest
from mlbatch.run.sweep_batch import BatchTasks, collect_batch_garbage
from mlbatch.run.sweep_runners import task_runner
from tests.integration.helpers import release_for_test_profile, run_batch_on_test_profile, settings_for_test_profile, wait_for
from tests.support.fake_batch import FakeBatch, Faults
from tests.support.fake_compute import FakeCompute
from tests.support.fake_project_iam import ProjectIam

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("infra")]  # a release first: minutes
PROJECT = "mlbatch-test"


@pytest.fixture(scope="module")
def world(infra, gcs_emulator):
    """A release as the gcp profile writes it (VM image by self link) in fake-gcs, the fake Batch
    API, and the fake Compute API's preflight routes (permissions, the subnet, the runner account)."""
    fake = FakeBatch(PROJECT, storage_emulator=gcs_emulator).start()
    compute = FakeCompute(PROJECT, boot_containers=False).start()
    bucket, version = release_for_test_profile("batch", fake)
    settings = settings_for_test_profile(bucket, batch_endpoint=fake.endpoint, compute_endpoint=compute.endpoint)
    compute.ready_for_runs(settings.region, settings.network, settings.service_account)
    fake.grant_runner(settings.service_account)  # README: the runner needs roles/batch.agentReporter
    fake.compute = compute  # the preflight's side of the same project
    yield settings, version, fake
    compute.stop()
    fake.stop()
    assert fake.running_containers() == []


@pytest.fixture
def fake(world):
    world[2].faults = Faults()
    yield world[2]
    world[2].faults = Faults()
    assert fake_is_idle(world[2]), "no task of a finished sweep is left running"


def fake_is_idle(fake: FakeBatch) -> bool:
    return not [j for j in fake.jobs.values() if j.state not in ("SUCCEEDED", "FAILED")] and not fake.running_containers()


def sweep(world, job="sleep", sweep_options=("seconds=1,2",), lines=None, **kwargs):
    settings, version, _ = world
    say = lines.append if lines is not None else lambda line: None
    runner, _ = task_runner(settings, open_bucket(settings.bucket), say)
    assert isinstance(runner, BatchTasks)
    runner.poll = 0.5
    request = SweepRequest(job, version, sweeps=tuple(sweep_options), **kwargs)
    return Sweep(open_bucket(settings.bucket), runner, say).run(request)


def cli(world, *args):
    settings, _, fake = world
    endpoints = {"batch_endpoint": fake.endpoint, "compute_endpoint": settings.compute_endpoint}
    return run_batch_on_test_profile({"bucket": settings.bucket, **endpoints}, *args)


def test_a_sweep_through_the_cli_is_one_batch_job(world, fake):
    before = fake.creates_performed
    proc = cli(world, "--job", "sleep", "--version", world[1], "--sweep", "seconds=1,2", "--sweep", "message=x,y")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert fake.creates_performed == before + 1, "one Batch job for the whole sweep"
    run_id = output.split("sweep ", 1)[1].split(":", 1)[0]
    job = fake.find(job_id(run_id))
    assert job is not None and job.state == "SUCCEEDED" and [t.state for t in job.tasks] == ["SUCCEEDED"] * 4
    labels = job.body["labels"]
    assert labels["managed-by"] == "mlbatch" and labels["run-id"] == run_id and labels["role"] == "sweep"
    bucket = open_bucket(world[0].bucket)
    record = runs.read_json(bucket, sweeps.sweep_key(run_id))
    assert [t["metrics"]["ticks"] for t in record["tasks"]] == [1, 1, 2, 2]
    assert "y 2/2" in bucket.read(sweeps.task_key(run_id, 3, "log")).decode(), "task 3 ran with its own params"
    assert "4 of 4 succeeded" in output and "best first by ticks" in output


def test_a_preempted_task_is_retried_by_the_lifecycle_policy(world, fake):
    """The Spot VM's shutdown gives the agent its window: it records the preemption and exits with
    its own code before the VM is gone, which Batch then reports; the one lifecycle policy retries
    that code as it retries Batch's own preemption code."""
    fake.faults.preempt_tasks = {1: 2.0}
    outcome, tasks = sweep(world, sweep_options=("seconds=4,5",))
    assert outcome.exit_code == 0, outcome.result
    assert [(t.status, t.attempts) for t in tasks] == [("succeeded", 1), ("succeeded", 2)]
    events = fake.find(job_id(outcome.run_id)).tasks[1].events
    # 105, not 110: on SIGTERM the agent asked its VM's metadata server, which said preempted.
    assert [e["taskExecution"]["exitCode"] for e in events if "taskExecution" in e] == [ExitCode.PREEMPTED, 0]


def test_task_vms_whose_account_may_not_report_to_batch_fail_and_say_which_role(world, fake):
    """Batch's agent on each VM reports with the VM's service account (batch.states.report): without
    roles/batch.agentReporter nothing runs there, and Batch gives the VM up."""
    granted, fake.iam = fake.iam, ProjectIam()  # a project where the runner was not granted the role
    fake.report_window = 1.0
    try:
        outcome, tasks = sweep(world, sweep_options=("seconds=1",))
    finally:
        fake.iam, fake.report_window = granted, FakeBatch.report_window
    assert outcome.exit_code == ExitCode.TASKS_FAILED, outcome.result
    assert [(t.status, t.exit_code) for t in tasks] == [("infra_failed", 50002)]
    assert "roles/batch.agentReporter" in tasks[0].message, tasks[0].message


def test_a_task_failing_with_its_own_code_is_not_retried_while_the_others_go_on(world, fake):
    # one at a time: the failing task comes first, and the other still runs after it
    outcome, tasks = sweep(world, job="fail-on-purpose", sweep_options=("exit_code=3,0",), parallelism=1)
    assert outcome.exit_code == ExitCode.TASKS_FAILED, outcome.result
    assert [(t.status, t.exit_code, t.attempts) for t in tasks] == [("failed", 3, 1), ("succeeded", 0, 1)]
    failed = fake.find(job_id(outcome.run_id)).tasks[0]
    assert [e["taskExecution"]["exitCode"] for e in failed.events if "taskExecution" in e] == [3], "no retry"


def test_a_sweep_the_caller_may_not_run_is_refused_before_anything_is_written(world, fake):
    """Issue 17, bug 3: a sweep asks the preflight a run does (here Batch's permissions)."""
    bucket = open_bucket(world[0].bucket)
    fake.compute.denied_permissions.add("batch.jobs.create")
    before = (fake.creates_performed, runs.list_run_ids(bucket, "sleep"))
    try:
        with pytest.raises(PermissionDenied, match="batch.jobs.create.*roles/batch.jobsEditor"):
            sweep(world)
    finally:
        fake.compute.denied_permissions.clear()
    assert (fake.creates_performed, runs.list_run_ids(bucket, "sleep")) == before, "no Batch job, no run records"


def test_a_quota_error_at_job_creation_gives_its_code_and_leaves_nothing(world, fake):
    fake.faults.quota_exceeded = True
    lines: list[str] = []
    outcome, tasks = sweep(world, lines=lines)
    assert outcome.exit_code == ExitCode.QUOTA_EXCEEDED and "Quota 'CPUS' exceeded" in outcome.result["message"]
    assert [t.status for t in tasks] == ["quota_exceeded"] * 2
    assert fake.find(job_id(outcome.run_id)) is None, "the waiting job was deleted"


def test_a_job_deleted_mid_run_is_reported_and_its_tasks_recorded(world, fake):
    settings = world[0]
    proc = cli(world, "--job", "sleep", "--version", world[1], "--sweep", "seconds=1,60", "--parallelism", "2")
    job = wait_for(lambda: next(iter(j for j in fake.jobs.values() if j.state == "RUNNING"), None), what="a running job")
    wait_for(lambda: job.tasks[0].state == "SUCCEEDED", what="task 0 to end")
    fake.delete_job(job)  # someone else deletes it (console, another script)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INFRA_FAILED, output
    assert "was deleted while the sweep ran" in output
    run_id = output.split("sweep ", 1)[1].split(":", 1)[0]
    record = runs.read_json(open_bucket(settings.bucket), sweeps.sweep_key(run_id))
    assert [t["status"] for t in record["tasks"]] == ["succeeded", "infra_failed"]
    wait_for(lambda: fake_is_idle(fake), what="the deleted job's VMs to go")


def test_cancelling_deletes_the_batch_job(world, fake):
    proc = cli(world, "--job", "sleep", "--version", world[1], "--sweep", "seconds=60,61")
    job = wait_for(lambda: next(iter(j for j in fake.jobs.values() if j.state == "RUNNING"), None), what="a running job")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == ExitCode.CANCELLED, output
    assert fake.find(job.name.rsplit("/", 1)[1]) is None and fake.running_containers() == []


def test_gc_removes_expired_batch_jobs_that_are_ours_and_nothing_else(world, fake):
    settings = world[0]
    proc = cli(world, "--job", "sleep", "--version", world[1], "--sweep", "seconds=600,601")
    job = wait_for(lambda: next(iter(j for j in fake.jobs.values() if j.state == "RUNNING"), None), what="a running job")
    proc.send_signal(signal.SIGKILL)  # the controller dies: its job is left to gc
    proc.wait(timeout=10)
    jobs = BatchJobs(settings)
    fake.faults.quota_exceeded = True  # someone else's job in the same project and region: it waits, never runs
    body = jobs.job_body(*_foreign_job(world), labels={"owner": "data-team"}, max_run_seconds=60)
    jobs.create("someone-elses-job", body)
    assert collect_batch_garbage(jobs, dry_run=False) == [], "nothing has expired yet"
    removed = collect_batch_garbage(jobs, dry_run=False, now=time.time() + 10 * 24 * 3600)
    assert f"Batch job {job.name.rsplit('/', 1)[1]}" in [name for name, _ in removed]
    assert all(name.startswith("Batch job mlb-") for name, _ in removed)
    assert fake.find("someone-elses-job") is not None
    jobs.delete("someone-elses-job", "test done")
    wait_for(lambda: fake_is_idle(fake) and not fake.find(job.name.rsplit("/", 1)[1]), what="the jobs to be deleted")


def _foreign_job(world):
    settings, version, _ = world
    manifest = manifests.load(open_bucket(settings.bucket), version)
    job = manifest.jobs["sleep"]
    spec = runs.RunSpec(
        run_id="sleep-20260101-000000-zzzz", job="sleep", version=version, bucket=settings.bucket, container="r@sha256:0",
        code_key="k", code_sha256="0", argv=tuple(job.command), params={}, timeout_seconds=60, created=runs.now_iso(),
        vm_image=manifest.vm_image.ref,
    )  # fmt: skip
    return spec, job, [job.resolve_params({})], 1
